"""add_modules — put the backbone source next to yolo.py (tutorial step "add the backbone file under models/").

Target (new file): `models/<family>.py` of the checkout (`yolov5/models/<family>.py` in the PyPI package),
the template copied verbatim under a one-line header. YOLOv5 has no `AddModules` package: the tutorials
add one file beside `models/common.py`, and the register step imports it into `models/yolo.py`.
Why not append to `common.py`: that works only through the star import (v7.0 and earlier); later master
imports a fixed list of names from `models.common`, so a class added there is never found.

Versions: every layout and version (the `models/` folder is always there).
Already applied: the file exists with our text, or a file of that name (yours, written following a
tutorial) defines every name of the backbone; it is kept, never overwritten.
Refused: a file of that name exists and does not define the backbone's names.

With `--weights FILE`: the line `<Class>.default_weights = "<FILE>"` at the end of mbpatch's source file (the
templates load `default_weights` when built without `weights=`), so every `Model(cfg)` loads the checkpoint.
A file of yours is not given the line (your class may not read it): apply refuses instead.

Your own class of the same name in `models/common.py` (tutorials paste the class there; v7.0 and earlier,
whose yolo.py star-imports common): the register step's
import, placed after the `models.common` import, would replace yours for the yaml name, so the recipe
refuses (the RecipeError has `users_own` set, which doctor reads as "applied: your own class") unless
`--replace-existing`. A file whose name differs from ours only in case (`models/MobileNetV2.py`) is refused
by the engine: the two would be one file on macOS and Windows.

VALID (after): models/repvit.py starts with `# mbpatch: backbone source from the mbpatch template 'repvit'`
INVALID: no models/repvit.py, so `from models.repvit import RepViTM1` fails.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import libcst as cst

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, Outcome, Recipe, RecipeError
from ..cst_anchors import MARK
from ..ultralytics.add_modules import defined_names, set_default_weights
from .layout import BACKBONE, not_this_style

HEADER = "{mark} {what} from the mbpatch template '{family}'. This file is yours to edit.\n"


def source_file(path: str, text: str, names: Sequence[str], sources: Mapping[str, Optional[str]]) -> Outcome:
    """Write `text` at `path` unless that file is already there (ours, or one defining every name)."""
    existing = sources.get(path)
    if existing is None:
        return Outcome(APPLIED, f"wrote {path}", {path: text})
    if existing == text:
        return Outcome(ALREADY, f"{path} is mbpatch's")
    try:
        defined = defined_names(cst.parse_module(existing))
    except cst.ParserSyntaxError as e:
        raise RecipeError(f"{path} exists and has a syntax error at line {e.editor_line}; fix or remove it") from None
    missing = [n for n in names if n not in defined]
    if missing:
        raise RecipeError(
            f"{path} exists and does not define {', '.join(missing)}; rename or remove your file, then apply again"
        )
    return Outcome(ALREADY, f"{path} exists and defines {', '.join(names)} (kept)")


class AddModules(Recipe):
    name = "add_modules"
    step = "add the backbone source file under models/ (next to yolo.py)"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BACKBONE):
            return []
        return [f"{ctx.checkout.files['models_dir']}/{ctx.backbone.family}.py", ctx.checkout.files["common"]]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BACKBONE)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        path, common = self.targets(ctx)
        _refuse_shadowing(ctx, common, sources.get(common), sources.get(path))
        header = HEADER.format(mark=MARK, what="backbone source", family=ctx.backbone.family)
        text = header + ctx.backbone.source()
        if not ctx.weights:
            return source_file(path, text, ctx.backbone.names, sources)
        existing = sources.get(path)
        if existing is not None and not existing.startswith(header):
            raise RecipeError(f"{path} is your own file, so --weights cannot wire the checkpoint into it; "
                              "load it in your class, or remove the file and apply again")
        base = text if existing is None else existing  # ours, maybe with another backbone's weights line
        new = set_default_weights(cst.parse_module(base), ctx.backbone.cls, ctx.weights)
        if new == existing:
            return Outcome(ALREADY, f"{path} is mbpatch's and loads {ctx.weights}")
        return Outcome(APPLIED, f"{'wrote' if existing is None else 'updated'} {path}; loads {ctx.weights}", {path: new})


def _refuse_shadowing(ctx: Context, common: str, common_text: Optional[str], ours: Optional[str]) -> None:
    """Refuse to replace the user's own class of the backbone's name defined in models/common.py."""
    cls = ctx.backbone.cls
    if "explicit imports" in ctx.checkout.version:  # master imports a fixed name list: yours is not used anyway
        return
    if ours is not None or not common_text or f"class {cls}" not in common_text or getattr(ctx, "replace_existing", False):
        return
    try:
        defined = defined_names(cst.parse_module(common_text))
    except cst.ParserSyntaxError:
        return  # the register step reports a broken common.py
    if cls in defined:
        e = RecipeError(f"{common} defines your own {cls}; mbpatch's {cls} would replace yours for the yaml name "
                        f"'{cls}': pass --replace-existing to use mbpatch's (your class stays as it is), or keep yours "
                        "and train with it")
        e.users_own = f"your own {cls} in {common}"
        e.file = common
        raise e
