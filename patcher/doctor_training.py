"""Doctor's "training" section: what in this checkout + interpreter pair makes training fail, and the fix.

Each check reads the checkout's own source (what it calls) and asks the interpreter (`--python`) what it has:

  torch.load     torch >= 2.6 loads with weights_only=True. A checkout whose loader never passes
                 weights_only=False cannot read its own checkpoints: YOLOv5 v7.0's train.py ends in
                 `strip_optimizer(best.pt)` and its final validation `attempt_load`s it (both `torch.load`),
                 which refuse `models.yolo.DetectionModel`; Ultralytics up to 8.1.x the same in `torch_safe_load`
                 (the trainer's final validation, `YOLO("best.pt")`). Fix: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
                 (only for checkpoints you trust: your own), or a newer checkout.
  pkg_resources  YOLOv5 v7.0 imports `pkg_resources` (utils/general.py, utils/loggers): setuptools 81 and
                 later no longer ship it. Fix: setuptools < 81.
  numpy.trapz    the validation metrics of Ultralytics up to 8.3.x and YOLOv5 v7.0 call `np.trapz`, removed in
                 numpy 2.4: validation (every epoch's end) fails. Fix: numpy < 2.4, or a newer checkout.
  cpuinfo        Ultralytics 8.1-era `select_device` imports `cpuinfo` (py-cpuinfo) to name the CPU; without
                 it training on CPU fails before the first epoch. Fix: pip install py-cpuinfo.
  torchvision    validation runs `torchvision.ops.nms`: a torchvision built for another torch fails there
                 (the environment section's probe says whether it runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .checkout import Checkout
from .child_env import child_env
from .train_child import NO_WO, calls_np_trapz, loads_through_ultralytics, passes_weights_only_false

PROBE = r"""
import json, sys
out = {}
try:
    import importlib
    importlib.import_module("pkg_resources")
    out["pkg_resources"] = True
except Exception as exc:
    out["pkg_resources"] = False
    out["pkg_resources_error"] = f"{type(exc).__name__}: {exc}"[:200]
import importlib.util
out["cpuinfo"] = importlib.util.find_spec("cpuinfo") is not None
try:
    import numpy
    out["numpy"] = numpy.__version__
    out["numpy_trapz"] = hasattr(numpy, "trapz")
except Exception as exc:
    out["numpy"] = None
# train_child.py (stdlib only) says whether this interpreter's Ultralytics torch_load passes weights_only=False
spec = importlib.util.spec_from_file_location("mbpatch_train_child", sys.argv[1])
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
out["ultralytics_torch_load"] = child.ultralytics_loader_passes_false()
print("@@MBPATCH-TRAINING@@" + json.dumps(out))
"""


def _prefix(co: Checkout) -> str:
    """Folder (relative to the root, with a trailing /) that holds train.py/utils: '' for a YOLOv5 clone."""
    if co.kind == "yolov5":
        return "" if co.layout == "git" else co.package.name + "/"
    return co.package.name + "/"


def loader_files(co: Checkout) -> List[str]:
    p = _prefix(co)
    if co.kind == "yolov5":
        return [p + "train.py", p + "utils/general.py", p + "models/experimental.py"]
    return [p + "nn/tasks.py", p + "utils/patches.py", p + "utils/torch_utils.py"]


def metrics_files(co: Checkout) -> List[str]:
    return [_prefix(co) + "utils/metrics.py"]


def pkg_resources_users(co: Checkout) -> List[str]:
    """Checkout files (utils/ and the entry scripts) that import pkg_resources."""
    base = co.root / _prefix(co)
    out = []
    for path in sorted(list((base / "utils").rglob("*.py")) + list(base.glob("*.py"))):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "import pkg_resources" in text or "from pkg_resources" in text:
            out.append(path.relative_to(co.root).as_posix())
    return out


def _probe(python: Optional[str]) -> Dict:
    env = child_env(keep_pythonpath=True)
    child = Path(__file__).with_name("train_child.py")
    try:
        proc = subprocess.run([python or sys.executable, "-c", PROBE, str(child)], capture_output=True, text=True, env=env,
                              timeout=120, cwd=str(Path.home()))
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    for line in proc.stdout.splitlines():
        if line.startswith("@@MBPATCH-TRAINING@@"):
            return json.loads(line[len("@@MBPATCH-TRAINING@@"):])
    return {"error": (proc.stderr.strip().splitlines() or ["no answer"])[-1]}


def _torch_version(env: Dict):
    t = env.get("torch") or {}
    try:
        return tuple(int(p) for p in str(t.get("version", "")).split("+")[0].split(".")[:2])
    except ValueError:
        return None


def check(co: Checkout, python: Optional[str], env: Dict, rep) -> None:
    """Add the training findings to `rep` (doctor.Report); `env` is the environment probe's answer."""
    py = python or sys.executable
    if not env.get("ok"):
        return  # the environment section already failed: nothing to judge against
    name = "YOLOv5" if co.kind == "yolov5" else "Ultralytics"
    tv = _torch_version(env)
    probe = _probe(python)
    own = passes_weights_only_false(str(co.root), loader_files(co))
    delegated = not own and loads_through_ultralytics(str(co.root), loader_files(co))
    if tv is not None and tv >= (2, 6) and delegated and not probe.get("ultralytics_torch_load"):
        lacks = ("has no `ultralytics` package" if probe.get("ultralytics_torch_load") is None
                 else "has an `ultralytics` whose torch_load does not pass weights_only=False")
        rep.add("training", "torch.load", "fail",
                f"this {name} checkout loads its checkpoints through ultralytics.utils.patches.torch_load, and this "
                f"interpreter {lacks}: torch {env['torch']['version']} would refuse the model class",
                f"{py} -m pip install -U ultralytics")
    elif tv is not None and tv >= (2, 6) and delegated:
        rep.add("training", "torch.load", "ok", "the checkout loads its checkpoints through "
                "ultralytics.utils.patches.torch_load, which passes weights_only=False")
    elif tv is not None and tv >= (2, 6) and not own:
        where = ("train.py ends in strip_optimizer(best.pt) and its final validation loads best.pt"
                 if co.kind == "yolov5" else "the trainer's final validation and YOLO('best.pt') load it")
        what = f"torch {env['torch']['version']} loads checkpoints with weights_only=True and this {name} {co.version} " \
               f"checkout's loader does not pass weights_only=False: {where} with torch.load, which refuses the model class"
        if os.environ.get(NO_WO) == "1":
            rep.add("training", "torch.load", "ok", f"{what}; {NO_WO}=1 is set here, so it loads")
        else:
            rep.add("training", "torch.load", "fail", what,
                    f"export {NO_WO}=1 before training (your own checkpoints only), or use a newer checkout "
                    "(YOLOv5 master, Ultralytics 8.2+), or torch < 2.6")
    elif tv is not None:
        rep.add("training", "torch.load", "ok", "the checkout's loader reads its own checkpoints with this torch")
    users = pkg_resources_users(co)
    if users:
        if probe.get("pkg_resources"):
            rep.add("training", "pkg_resources", "ok", f"imported by {', '.join(users)}; importable")
        else:
            rep.add("training", "pkg_resources", "fail",
                    f"{', '.join(users)} import pkg_resources, which this interpreter lacks "
                    f"({probe.get('pkg_resources_error') or probe.get('error')}): setuptools 81+ no longer ships it",
                    f"{py} -m pip install 'setuptools<81'")
    if calls_np_trapz(str(co.root), metrics_files(co)):
        if probe.get("numpy_trapz") is False:
            rep.add("training", "numpy.trapz", "fail",
                    f"{metrics_files(co)[0]} calls np.trapz, which numpy {probe.get('numpy')} no longer has: "
                    "validation fails at the end of every epoch",
                    f"{py} -m pip install 'numpy<2.4', or use a newer checkout")
        elif probe.get("numpy_trapz"):
            rep.add("training", "numpy.trapz", "ok", f"{metrics_files(co)[0]} calls np.trapz; numpy {probe.get('numpy')} has it")
    torch_utils = [_prefix(co) + "utils/torch_utils.py"]
    if any("import cpuinfo" in (co.root / rel).read_text(encoding="utf-8", errors="replace")
           for rel in torch_utils if (co.root / rel).is_file()):
        if probe.get("cpuinfo") is False:
            rep.add("training", "cpuinfo", "fail",
                    f"{torch_utils[0]} imports cpuinfo when the trainer picks a CPU device (select_device); "
                    "this interpreter lacks it", f"{py} -m pip install py-cpuinfo")
        elif probe.get("cpuinfo"):
            rep.add("training", "cpuinfo", "ok", f"{torch_utils[0]} imports cpuinfo; installed")
    tvis = env.get("torchvision") or {}
    if tvis.get("ok") and (tvis.get("nms") or {}).get("ok", True):
        rep.add("training", "validation nms", "ok", "validation's torchvision.ops.nms runs with this torch")
    else:
        rep.add("training", "validation nms", "fail", "validation runs torchvision.ops.nms, which fails here (see environment)",
                "install the torchvision built for this torch (pytorch.org lists the matching pairs)")
