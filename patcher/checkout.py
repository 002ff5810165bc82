"""Find out what a `--repo` path holds: an Ultralytics or YOLOv5 checkout, its version and the files to patch.

Detection is by structure (which files exist and what they define), never by trusting a version number:
the same release can be a git clone, an unpacked wheel or an installed package folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import MbpatchError

_VERSION = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


@dataclass
class Checkout:
    kind: str  # "ultralytics" or "yolov5"
    root: Path  # the folder that holds the package (what goes first on sys.path); the journal lives here
    package: Path  # the importable package folder (`ultralytics/`, or the yolov5 root / `yolov5/`)
    version: str
    layout: str  # ultralytics: "wheel-8.0.0" / "pre-8.0.150" / "current"; yolov5: "git" / "pypi"
    files: Dict[str, Optional[str]] = field(default_factory=dict)  # role -> path relative to root (posix)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    @property
    def version_tuple(self) -> Tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.version)[:3])

    def read(self, rel: Optional[str]) -> Optional[str]:
        if rel is None:
            return None
        p = self.root / rel
        return p.read_text(encoding="utf-8") if p.is_file() else None


def _first(root: Path, *candidates: str) -> Optional[str]:
    for c in candidates:
        if (root / c).is_file():
            return c
    return None


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
    from . import yolov5_checkout  # noqa: WPS433 (kept apart: YOLOv5 has its own layouts)

    found = yolov5_checkout.detect(path)
    if found is not None:
        return found
    raise MbpatchError(
        "not an Ultralytics or YOLOv5 checkout (no ultralytics/nn/tasks.py, no models/yolo.py); "
        "pass --repo the folder you cloned",
        file=str(path),
        step="detect",
    )
