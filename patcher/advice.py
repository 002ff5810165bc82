"""What to install when a child process stops on a missing package: the checkout's own requirements when they
list it (so the next missing one does not surface on the following run), else the pip line for that package."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Optional

# import name -> the distribution pip installs it from, where they differ
PIP_NAMES = {"cv2": "opencv-python", "PIL": "Pillow", "yaml": "PyYAML", "sklearn": "scikit-learn",
             "cpuinfo": "py-cpuinfo", "IPython": "ipython", "onnxruntime": "onnxruntime", "google": "protobuf"}
_MISSING = re.compile(r"No module named '([A-Za-z0-9_.]+)'")


def missing_module(text: str) -> Optional[str]:
    """The top-level module a ModuleNotFoundError in `text` names, or None."""
    m = _MISSING.search(text or "")
    return m.group(1).split(".")[0] if m else None


def install_line(error: str, root: Path, python: Optional[str] = None) -> Optional[str]:
    """The command that installs what `error` says is missing, or None when it names no missing package
    (or a module of the checkout itself, which no pip line fixes)."""
    name = missing_module(error)
    if name is None:
        return None
    root = Path(root)
    if (root / name).is_dir() or (root / f"{name}.py").is_file():
        return None  # the checkout's own module: a broken checkout, not a missing package
    py = shlex.quote(python or sys.executable)
    dist = PIP_NAMES.get(name, name)
    wanted = re.compile(r"(?im)^\s*[\"']?" + re.escape(dist).replace(r"\-", "[-_]") + r"(?![A-Za-z0-9_.-])")
    for req in (root / "requirements.txt", *sorted(root.glob("*/requirements.txt"))):
        if req.is_file() and wanted.search(req.read_text(encoding="utf-8", errors="replace")):
            return f"{py} -m pip install -r {shlex.quote(str(req))}"
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r"[\"']" + re.escape(dist) + r"(?![A-Za-z0-9_-])",
                                         pyproject.read_text(encoding="utf-8", errors="replace"), re.I):
        return f"{py} -m pip install -e {shlex.quote(str(root))}"
    return f"{py} -m pip install {shlex.quote(dist)}"
