"""Verification (SPEC §7): build stock and patched models in a subprocess of the target interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import MbpatchError
from .advice import install_line
from .child_env import child_env

CHILD = Path(__file__).with_name("verify_child.py")
MARKER = "@@MBPATCH-RESULT@@"
STAGE = "@@MBPATCH-STAGE@@"  # verify_child.py prints `STAGE text` on stderr when a stage begins


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


def run(target: Target, python: Optional[str] = None, timeout: float = 900,
        on_stage: Optional[Callable[[str], None]] = None) -> Dict:
    """Build the two models in a subprocess; `on_stage` is called with each stage the child announces."""
    args = dict(
        root=str(target.root), package=target.package, model=target.model, stock=str(target.stock),
        patched=str(target.patched), scaled=target.scaled, scale=target.scale, nc=target.nc,
    )
    if target.kind != "ultralytics":
        args["kind"] = target.kind
    if target.task != "detect":
        args["task"] = target.task
    result = run_child(CHILD, args, python, timeout, on_stage, str(target.root), "verification", step="verify")
    if not result.get("ok"):
        result["install"] = install_line(str(result.get("error")) + "\n" + str(result.get("traceback")), target.root, python)
    return result


def run_child(script: Path, args: Dict, python: Optional[str], timeout: float,
              on_stage: Optional[Callable[[str], None]], cwd: str, what: str, step: Optional[str] = None) -> Dict:
    """Run one of mbpatch's child scripts in the target interpreter and return the result it prints after MARKER.
    Stage lines go to `on_stage` as they arrive; the child never outlives mbpatch (time-out, Ctrl-C, SIGTERM)."""
    cmd = [python or sys.executable, str(script), json.dumps(args)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                cwd=cwd)
    except FileNotFoundError:
        raise MbpatchError("interpreter not found; pass --python the python of your training environment",
                           file=str(python), step=step or what) from None
    err_lines: List[str] = []
    out: List[str] = []
    # one thread per pipe (communicate() would read stderr too, taking stage lines from the reader)
    readers = [threading.Thread(target=_read_stderr, args=(proc.stderr, err_lines, on_stage), daemon=True),
               threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"ok": False, "error": f"{what} timed out after {timeout:.0f} s"}
    except BaseException:  # Ctrl-C / SIGTERM (stop.Stopped): the child ends with its parent, never outlives it
        proc.kill()
        proc.wait()
        raise
    for r in readers:
        r.join(timeout=30)
    stdout = "".join(out)
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            break
    else:
        tail = ([ln for ln in err_lines if ln.strip()] or stdout.strip().splitlines())[-5:]
        result = {"ok": False, "error": f"the {what} process died: " + " | ".join(tail)}
    result["stderr_tail"] = "\n".join(err_lines).strip().splitlines()[-20:]
    return result


def _read_stderr(stream, lines: List[str], on_stage) -> None:
    """Collect the child's stderr; stage lines (STAGE + text) go to `on_stage` as they arrive, not to the tail."""
    for line in stream:
        if line.startswith(STAGE):
            if on_stage is not None:
                try:
                    on_stage(line[len(STAGE):].strip())
                except Exception:  # noqa: BLE001 (a display problem must not lose the result)
                    pass
        else:
            lines.append(line.rstrip("\n"))


def pct(new, old):
    if old in (None, 0) or new is None:
        return None
    return 100.0 * (new - old) / old
