"""What the YOLOv5 recipes share: the tutorial style, the `models.common` import anchor, the import we add.

Facts used here (ref/yolov5-versions.md, anchor A1): `models/yolo.py` has exactly one top-level
`from <prefix>models.common import ...` in every version (a star import up to v7.0 and in every PyPI
release, an explicit name list in later master). `<prefix>` is '' in a git clone and 'yolov5.' in the
PyPI package. `parse_model` resolves yaml names with `eval` in yolo.py's globals, so a class is usable in a
yaml only when yolo.py itself imports it; every import mbpatch adds is absolute, `<prefix>models.<file>`,
and sits right after that anchor.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import libcst as cst

from .. import Context, RecipeError
from ..cst_anchors import MARK, code_of, stmt

BACKBONE = "backbone"  # whole backbone at yaml layer 0 (RepViT, MobileNet family), SPEC §4
BLOCKS = "blocks"  # MobileNetV2 inverted-residual blocks as ordinary layers (the MobileNetV2 tutorial)
STYLES = (BACKBONE, BLOCKS)

BLOCK_MODULE = "mobilenetv2_blocks"  # template file (templates/) and module name in the checkout's models/
BLOCK_CLASS = "InvertedResidual"
BLOCK_BACKBONES = ("mobilenetv2",)  # catalogue ids the per-block style exists for


def style(ctx: Context) -> str:
    """The tutorial style of this apply (`--style`); whole backbone unless the caller chose blocks."""
    return getattr(ctx, "style", BACKBONE) or BACKBONE


def not_this_style(ctx: Context, wanted: str) -> str:
    """A reason for 'not needed' when the recipe belongs to the other style, else ''."""
    if style(ctx) == wanted:
        return ""
    other = "per-block (--style blocks)" if wanted == BLOCKS else "whole-backbone (--style backbone)"
    return f"only for the {other} style"


def dotted(node) -> str:
    return code_of(node) if node is not None else ""


def _import_from(node: cst.CSTNode):
    if isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1 and isinstance(node.body[0], cst.ImportFrom):
        imp = node.body[0]
        if not imp.relative:
            return imp
    return None


def common_import(module: cst.Module) -> Tuple[int, str]:
    """(index in module.body, prefix) of the one top-level `from <prefix>models.common import ...`."""
    found = []
    for k, s in enumerate(module.body):
        imp = _import_from(s)
        if imp is None or imp.module is None:
            continue
        name = dotted(imp.module)
        if name == "models.common" or name.endswith(".models.common"):
            found.append((k, name[: -len("models.common")]))
    if len(found) != 1:
        raise RecipeError(
            f"expected one top-level `from models.common import ...` (or `from yolov5.models.common ...`) in "
            f"models/yolo.py, found {len(found)}; restore the stock import or add the import by hand"
        )
    return found[0]


def ensure_import(module: cst.Module, modname: str, names: Sequence[str], why: str) -> Tuple[cst.Module, bool]:
    """Make yolo.py import `names` from `<prefix>models.<modname>`; returns (module, changed).

    An existing import of that module (star, or naming every name) counts as done, whoever wrote it; one
    that names only some gets the missing names; otherwise a new line goes right after the A1 anchor.
    """
    k_common, prefix = common_import(module)
    target = f"{prefix}models.{modname}"
    body = list(module.body)
    existing = []
    for k, s in enumerate(body):
        imp = _import_from(s)
        if imp is not None and imp.module is not None and dotted(imp.module) == target:
            existing.append(k)
    for k in existing:
        imp = body[k].body[0]
        if isinstance(imp.names, cst.ImportStar):
            return module, False
        have = [a.name.value for a in imp.names if isinstance(a.name, cst.Name)]
        if all(n in have for n in names):
            return module, False
    if existing:
        k = existing[0]
        imp = body[k].body[0]
        have = [a.name.value for a in imp.names if isinstance(a.name, cst.Name)]
        aliases = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in imp.names]
        aliases += [cst.ImportAlias(cst.Name(n)) for n in names if n not in have]
        body[k] = body[k].with_changes(body=[imp.with_changes(names=tuple(aliases), lpar=None, rpar=None)])
        return module.with_changes(body=tuple(body)), True
    line = stmt(f"from {target} import {', '.join(names)}  {MARK} {why}\n")
    body.insert(k_common + 1, line)
    return module.with_changes(body=tuple(body)), True


def import_names(module: cst.Module, modname: str) -> List[str]:
    """Names yolo.py imports from `<prefix>models.<modname>` ('*' for a star import)."""
    _, prefix = common_import(module)
    out: List[str] = []
    for s in module.body:
        imp = _import_from(s)
        if imp is not None and imp.module is not None and dotted(imp.module) == f"{prefix}models.{modname}":
            if isinstance(imp.names, cst.ImportStar):
                out.append("*")
            else:
                out += [a.name.value for a in imp.names if isinstance(a.name, cst.Name)]
    return out


def prefix_of(checkout) -> str:
    """'' for a git clone, 'yolov5.' for the PyPI package: the dotted path from the root to the package."""
    parts = checkout.package.resolve().relative_to(checkout.root.resolve()).parts
    return "".join(p + "." for p in parts)
