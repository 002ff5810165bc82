"""The environment of the child processes mbpatch starts in the user's interpreter (verify, train, sizes, doctor).

Ultralytics keeps a `settings.json` in its config folder and, on import, logs a warning (on stdout) when another
release wrote it with another schema, and rewrites it. A child that shares the user's folder would both read
that noise and rewrite the user's settings for the release under test. So each child gets its own config folder
-- one temporary folder per mbpatch run, removed at exit -- unless the user chose one with YOLO_CONFIG_DIR.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Dict, Optional

_CONFIG_DIR: Optional[str] = None


def _config_dir() -> str:
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = tempfile.mkdtemp(prefix="mbpatch-yolo-config-")
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    return _CONFIG_DIR


def child_env(keep_pythonpath: bool = False) -> Dict[str, str]:
    """os.environ without PYTHONPATH (the checkout goes first on sys.path, nothing ahead of it; doctor keeps it:
    it judges the user's environment), with Ultralytics offline, quiet, and in a config folder of its own."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", YOLO_OFFLINE="1", YOLO_VERBOSE="False")
    if not keep_pythonpath:
        env.pop("PYTHONPATH", None)
    if not env.get("YOLO_CONFIG_DIR"):
        env["YOLO_CONFIG_DIR"] = _config_dir()
    return env
