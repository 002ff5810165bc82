"""`mbpatch verify --train`: the checkout's own trainer on the patched model (`--export`: export.py).

Each step runs `train_child.py` in a fresh process of the target interpreter (`--python`):

  train   generate a small dataset of the task (datasets.py) under the work folder, train for `epochs` with
          the checkout's trainer (Ultralytics `model.train`, YOLOv5 `train.run`), which validates and writes
          `<work>/runs/train/weights/best.pt`;
  reload  a new process loads that best.pt with the checkout's own loader and runs it forward.

The work folder is a new temporary folder (kept, and printed, so best.pt can be used)
unless `--work` names one. Nothing is written into the checkout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

from . import MbpatchError
from .advice import install_line
from .child_env import child_env
from .load_path import loadable
from .verify import Target

CHILD = Path(__file__).with_name("train_child.py")
MARKER = "@@MBPATCH-RESULT@@"
TASKS = ("detect", "segment", "pose", "obb", "classify")


def _files(target: Target) -> Dict[str, list]:
    """The checkout files the child reads to decide on the torch-load and numpy compat settings."""
    if target.kind == "yolov5":
        pre = "" if target.package == "models" else target.package[: -len("models")].replace(".", "/")
        return dict(loader_files=[pre + "train.py", pre + "utils/general.py", pre + "models/experimental.py"],
                    metrics_files=[pre + "utils/metrics.py"])
    pkg = target.package.replace(".", "/")
    return dict(loader_files=[f"{pkg}/nn/tasks.py", f"{pkg}/utils/patches.py", f"{pkg}/utils/torch_utils.py"],
                metrics_files=[f"{pkg}/utils/metrics.py"])


HEAD = re.compile(r",\s*(Segment|Pose|OBB|Classify)\w*\s*,")
TASK_OF_HEAD = {"Segment": "segment", "Pose": "pose", "OBB": "obb", "Classify": "classify"}


def task_of_yaml(path, default: str = "detect") -> str:
    """The task a model yaml builds, from its head module (`Segment`, `Pose26`, `OBB`, `Classify`, ...)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return default
    found = HEAD.findall(text)
    return TASK_OF_HEAD[found[-1]] if found else "detect"


def model_path(target: Target, arch: str) -> str:
    """The patched yaml under the name the user loads, as load_name gives it."""
    return load_name(Path(target.patched), target, arch)


def stock_path(target: Target, arch: str) -> str:
    """The stock yaml under the name the user loads (`yolov8.yaml` -> `yolov8n.yaml`), as load_name gives it."""
    return load_name(Path(target.stock), target, arch)


def load_name(path: Path, target: Target, arch: str) -> str:
    """The name the user loads: Ultralytics reads the scale from it (`yolov8n-<id>.yaml` -> yolov8-<id>.yaml, n),
    as a path its scale regex cannot corrupt (load_path). YOLOv5 opens the path as given (no scale regex)."""
    if target.kind == "yolov5":
        return str(path)
    if target.scaled and arch != "rtdetr":
        if path.stem == arch:
            path = path.with_name(f"{arch}{target.scale}{path.suffix}")
        elif f"{arch}-" in path.name:
            path = path.with_name(path.name.replace(f"{arch}-", f"{arch}{target.scale}-", 1))
    return loadable(path, Path(target.root) / target.package.replace(".", "/"))


def child(args: Dict, python: Optional[str], timeout: float, script: Path = CHILD) -> Dict:
    env = child_env()
    cmd = [python or sys.executable, str(script), json.dumps(args)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=args["work"])
    except FileNotFoundError:
        raise MbpatchError("interpreter not found; pass --python the python of your training environment",
                           file=str(python), step="verify") from None
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"{args.get('mode', 'export')} timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            break
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        result = {"ok": False, "error": f"the {args.get('mode', 'export')} process died: " + " | ".join(tail)}
    result["process_s"] = time.perf_counter() - t0
    if not result.get("ok"):
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-20:]
        result["install"] = install_line(f"{result.get('error')}\n{result.get('traceback')}", Path(args["root"]), python)
    return result


def _base(target: Target, arch: str, task: str, work: str, imgsz: int) -> Dict:
    args = dict(kind=target.kind, root=str(target.root), package=target.package, model=model_path(target, arch),
                arch=arch, task=task, work=work, imgsz=imgsz, nc=target.nc)
    args.update(_files(target))
    return args


def work_folder(work: Optional[str], what: str) -> str:
    if work:
        path = Path(work).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    return tempfile.mkdtemp(prefix=f"mbpatch-{what}-")


def train_check(target: Target, arch: str, task: str = "detect", python: Optional[str] = None, imgsz: int = 64,
                epochs: int = 1, batch: int = 8, work: Optional[str] = None, timeout: float = 1800) -> Dict:
    """Train, validate, reload; one dict with every verdict (`ok` is all of them)."""
    if task not in TASKS:
        raise MbpatchError(f"unknown task '{task}'; one of {', '.join(TASKS)}", step="train")
    if target.kind == "yolov5" and task != "detect":
        raise MbpatchError(f"--train on YOLOv5 checkouts trains detection only, not {task}", file=str(target.root), step="train")
    folder = work_folder(work, "train")
    t0 = time.perf_counter()
    args = _base(target, arch, task, folder, imgsz)
    args.update(mode="train", epochs=epochs, batch=batch)
    trained = child(args, python, timeout)
    doc: Dict = dict(task=task, work=folder, model=args["model"], imgsz=imgsz, epochs=epochs, batch=batch, train=trained)
    if trained.get("ok") and trained.get("best"):
        args = _base(target, arch, task, folder, imgsz)
        args.update(mode="reload", best=trained["best"])
        doc["reload"] = child(args, python, timeout)
    else:
        doc["reload"] = {"ok": False, "error": "no best.pt to reload" if trained.get("ok") else "training failed"}
    rl = doc["reload"]
    doc["loss_finite"] = bool(trained.get("loss_finite"))
    doc["metrics_computed"] = bool(trained.get("metrics_computed"))
    doc["reload_ok"] = bool(rl.get("ok") and rl.get("output_finite"))
    doc["wall_s"] = time.perf_counter() - t0
    doc["ok"] = bool(trained.get("ok")) and doc["loss_finite"] and doc["metrics_computed"] and doc["reload_ok"]
    return doc
