"""Find out what a `--repo` path holds: an Ultralytics or YOLOv5 checkout, its version and the files to patch.

Detection is by structure (which files exist and what they define), never by trusting a version number:
the same release can be a git clone, an unpacked wheel or an installed package folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from . import MbpatchError
from . import yolov5_checkout
from .checkout_base import VERSION_LINE as _VERSION
from .checkout_base import Checkout
from .checkout_base import first_file as _first

__all__ = ["Checkout", "detect", "installed_package"]


def _ultralytics(root: Path, pkg: Path) -> Checkout:
    init = (pkg / "__init__.py").read_text(encoding="utf-8", errors="replace")
    m = _VERSION.search(init)
    if not m:
        raise MbpatchError(
            "no __version__ line: cannot tell which Ultralytics release this is; restore its `__version__ = \"8.x.y\"` line",
            file=str(pkg / "__init__.py"),
            step="detect",
        )
    name = pkg.name
    files: Dict[str, Optional[str]] = {
        "tasks": f"{name}/nn/tasks.py",
        "block": _first(root, f"{name}/nn/modules/block.py"),
        "torch_utils": _first(root, f"{name}/utils/torch_utils.py", f"{name}/yolo/utils/torch_utils.py"),
        "detect_train": _first(
            root, f"{name}/models/yolo/detect/train.py", f"{name}/yolo/v8/detect/train.py"
        ),
        "trainer": _first(root, f"{name}/engine/trainer.py", f"{name}/yolo/engine/trainer.py"),
    }
    # Model yaml folders moved twice (8.0.6 and the 8.0.150 restructure), see ref/ultralytics-versions.md.
    for cfg in (f"{name}/cfg/models", f"{name}/models", f"{name}/yolo/v8/models"):
        if (root / cfg).is_dir() and any((root / cfg).rglob("yolov8*.yaml")):
            files["cfg_models"] = cfg
            break
    else:
        files["cfg_models"] = None
    if files["torch_utils"] is None or not (root / files["tasks"]).is_file():
        raise MbpatchError(
            "this looks like Ultralytics but nn/tasks.py or utils/torch_utils.py is missing",
            file=str(pkg),
            step="detect",
        )
    if (root / f"{name}/cfg/models").is_dir():
        layout = "current"
    elif (root / f"{name}/yolo/v8/models").is_dir():
        layout = "wheel-8.0.0"
    else:
        layout = "pre-8.0.150"
    return Checkout("ultralytics", root, pkg, m.group(1), layout, files)


def _is_ultralytics_pkg(p: Path) -> bool:
    return (p / "__init__.py").is_file() and (p / "nn" / "tasks.py").is_file()


def detect(repo: str) -> Checkout:
    """Return the checkout at `repo` (a repo root or the package folder itself), or raise MbpatchError."""
    path = Path(repo).expanduser()
    if not path.exists():
        raise MbpatchError("path does not exist; pass --repo the folder of your checkout", file=str(path), step="detect")
    if not path.is_dir():
        raise MbpatchError(
            "is a file, not a folder; pass --repo the folder of your checkout", file=str(path), step="detect"
        )
    path = path.resolve()
    if _is_ultralytics_pkg(path / "ultralytics"):
        return _ultralytics(path, path / "ultralytics")
    if _is_ultralytics_pkg(path) and path.name == "ultralytics":
        return _ultralytics(path.parent, path)
    found = yolov5_checkout.detect(path)
    if found is not None:
        return found
    raise MbpatchError(
        "not an Ultralytics or YOLOv5 checkout (no ultralytics/nn/tasks.py, no models/yolo.py); "
        "pass --repo the folder you cloned",
        file=str(path),
        step="detect",
    )


def installed_package(co: Checkout) -> Optional[str]:
    """Why `co` looks like a package pip installed (not a source checkout), or None.

    Either the package sits in a `site-packages` / `dist-packages` folder, or a `<name>-*.dist-info` (or
    `.egg-info`) folder lies beside it, which is what pip leaves next to a package it installed.
    """
    for part in co.package.resolve().parts:
        if part in ("site-packages", "dist-packages"):
            return f"it is inside {part}/"
    name = co.package.name
    parent = co.package.parent
    if co.kind == "yolov5" and co.layout == "git":
        return None  # a git clone's root is the package: nothing of pip's can lie beside it
    for pattern in (f"{name}-*.dist-info", f"{name}-*.egg-info"):
        hits = sorted(parent.glob(pattern))
        if hits:
            return f"{hits[0].name} lies beside it"
    return None
