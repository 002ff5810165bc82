"""Verification (SPEC §7): build stock and patched models in a subprocess of the target interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from . import MbpatchError

CHILD = Path(__file__).with_name("verify_child.py")
MARKER = "@@MBPATCH-RESULT@@"


@dataclass
class Target:
    """What to build: the checkout's package, the model class and the two yaml files."""

    root: Path
    package: str
    model: str
    stock: Path
    patched: Path
    scaled: bool
    scale: str
    nc: int
    kind: str = "ultralytics"  # "yolov5": verify_child builds `<package>.yolo.Model` from the yaml files
    task: str = "detect"  # what the trainer calls it: detect, segment, pose, obb, classify, semantic, depth
    trainer: str = "YOLO"  # Ultralytics: the class that trains the yaml (YOLO, RTDETR); YOLOv5: its train script
    load_name: str = ""  # the yaml name to load for this scale (Ultralytics reads the scale from the file name)


def run(target: Target, python: Optional[str] = None, timeout: float = 900) -> Dict:
    args = dict(
        root=str(target.root), package=target.package, model=target.model, stock=str(target.stock),
        patched=str(target.patched), scaled=target.scaled, scale=target.scale, nc=target.nc,
    )
    if target.kind != "ultralytics":
        args["kind"] = target.kind
    if target.task != "detect":
        args["task"] = target.task
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", YOLO_VERBOSE="False", YOLO_OFFLINE="1")
    env.pop("PYTHONPATH", None)  # the checkout goes first on sys.path, nothing else ahead of it
    cmd = [python or sys.executable, str(CHILD), json.dumps(args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(target.root))
    except FileNotFoundError:
        raise MbpatchError("interpreter not found; pass --python the python of your training environment",
                           file=str(python), step="verify") from None
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"verification timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            break
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        result = {"ok": False, "error": "the verification process died: " + " | ".join(tail)}
    result["stderr_tail"] = proc.stderr.strip().splitlines()[-20:]
    return result


def pct(new, old):
    if old in (None, 0) or new is None:
        return None
    return 100.0 * (new - old) / old
