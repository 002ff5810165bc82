"""Detection of YOLOv5 checkouts: the git clone layout and the PyPI `yolov5` package (SPEC §4).

The layout is read from the code, never from folder names: `models/yolo.py` has exactly one top-level
`from <prefix>models.common import ...`. An empty prefix is a git clone (the repo root goes first on
sys.path and the code imports `models.*` / `utils.*`); `yolov5.` is the PyPI package (the folder that
*contains* `yolov5/`, e.g. site-packages, goes first on sys.path). The import may be a star import (up to
v7.0 and every PyPI release) or master's explicit name list; both count.

`--repo` may name the git root, the `yolov5/` package folder itself, or the folder that holds it.

There is no version number in a git clone, so `version` is a label of the structure that matters to the
recipes: which class owns `_forward_once` (`Model` up to v6.1, `BaseModel` after) and how the names of
`models/common.py` arrive (star import, or master's explicit list).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional, Tuple

from .checkout_base import VERSION_LINE as _VERSION
from .checkout_base import Checkout
from .checkout_base import first_file as _first


def _common_import(source: str) -> Optional[Tuple[str, bool]]:
    """(prefix, star) of the one top-level `from <prefix>models.common import ...` of yolo.py, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mod = node.module
            if mod == "models.common" or mod.endswith(".models.common"):
                star = any(a.name == "*" for a in node.names)
                found.append((mod[: -len("models.common")], star))
    return found[0] if len(found) == 1 else None


def _structure(source: str, star: bool) -> str:
    """A label for the code generation of yolo.py (see the module docstring)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "code of unknown vintage"
    owner = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            if any(isinstance(f, ast.FunctionDef) and f.name == "_forward_once" for f in node.body):
                owner = node.name
                break
    if not star:
        return "post-v7.0 master code: explicit imports"
    if owner == "Model":
        return "v6.0-v6.1 code: class Model"
    if owner == "BaseModel":
        return "v6.2-v7.0 code: class BaseModel"
    return "code of unknown vintage"


def _build(root: Path, package: Path, prefix: str, star: bool, source: str) -> Checkout:
    base = package.relative_to(root).as_posix()
    rel = (base + "/") if base not in ("", ".") else ""
    layout = "git" if prefix == "" else "pypi"
    files = {
        "yolo": f"{rel}models/yolo.py",
        "common": f"{rel}models/common.py",
        "torch_utils": _first(root, f"{rel}utils/torch_utils.py"),
        "train": _first(root, f"{rel}train.py"),
        "models_dir": f"{rel}models",
    }
    label = _structure(source, star)
    init = package / "__init__.py"
    found = None
    if layout == "pypi" and init.is_file():
        found = _VERSION.search(init.read_text(encoding="utf-8", errors="replace"))
    version = f"{found.group(1) if found else layout} ({label})"
    return Checkout("yolov5", root, package, version, layout, files)


def _probe(folder: Path) -> Optional[Tuple[str, bool, str]]:
    yolo = folder / "models" / "yolo.py"
    if not (yolo.is_file() and (folder / "models" / "common.py").is_file()):
        return None
    source = yolo.read_text(encoding="utf-8", errors="replace")
    found = _common_import(source)
    if found is None:
        return None
    return found[0], found[1], source


def _root_for(package: Path, prefix: str) -> Optional[Path]:
    """The folder that must go first on sys.path so that `<prefix>models` imports `package/models`."""
    parts = [p for p in prefix.split(".") if p]
    root = package
    for name in reversed(parts):
        if root.name != name:
            return None
        root = root.parent
    return root


def detect(path: Path) -> Optional[Checkout]:
    """Return a Checkout for a YOLOv5 checkout at `path` (git root, `yolov5/` folder or its parent), or None."""
    path = Path(path).resolve()
    candidates = [path]
    if (path / "yolov5").is_dir():
        candidates.append(path / "yolov5")
    for package in candidates:
        probed = _probe(package)
        if probed is None:
            continue
        prefix, star, source = probed
        root = _root_for(package, prefix)
        if root is None:
            continue
        return _build(root, package, prefix, star, source)
    return None
