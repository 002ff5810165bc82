"""flops_stride — GFLOPs are profiled at 640, not at the model stride (tutorial step "force the FLOPs stride").

Target: `get_flops` in `ultralytics/yolo/utils/torch_utils.py` (up to 8.0.132) or
`ultralytics/utils/torch_utils.py` (8.0.150+). Up to 8.0.235 (variants G0-G5) it profiles one
`stride x stride` (32x32) image and scales the result, with no fallback: a backbone that cannot run at
32x32, or whose cost does not scale with area, prints no or wrong GFLOPs.

Edit: the value of `stride = ...` inside get_flops becomes `640`; the rest of the body scales by
`imgsz / stride`, so the figure is exact at imgsz 640.
Already applied: `stride = 640` (the tutorials' hand edit).
Not needed: releases whose get_flops already builds a full-size input `(1, c, *imgsz)` (8.0.236+: a
try/except fallback, later the full size always).

VALID:   stride = 640  # mbpatch: ...
INVALID: stride = max(int(model.stride.max()), 32) if hasattr(model, 'stride') else 32
"""

from __future__ import annotations

import ast

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import MARK, as_ast, module_function, replace_within

_STRIDE = m.Assign(targets=[m.AssignTarget(m.Name("stride"))])


def _state(fn: ast.FunctionDef):
    """The one reading of get_flops that precheck (on the file) and transform (on its node) share:
    (status, detail) when there is nothing to do, else None."""
    if any(isinstance(t, ast.Tuple) and any(isinstance(e, ast.Starred) and isinstance(e.value, ast.Name)
                                           and e.value.id == "imgsz" for e in t.elts) for t in ast.walk(fn)):
        return NOT_NEEDED, "get_flops already profiles the full image size"  # a `(..., *imgsz)` input
    strides = [n.value for n in ast.walk(fn) if isinstance(n, ast.Assign) and len(n.targets) == 1
               and isinstance(n.targets[0], ast.Name) and n.targets[0].id == "stride"]
    if strides and all(isinstance(v, ast.Constant) and v.value == 640 for v in strides):
        return ALREADY, "stride = 640"
    return None


class FlopsStride(ModuleRecipe):
    name = "flops_stride"
    step = "get_flops profiles at 640 instead of the 32x32 stride"
    role = "torch_utils"

    def precheck(self, text, ctx):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None  # transform reports it
        fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_flops"]
        return _state(fns[0]) if len(fns) == 1 else None

    def transform(self, module: cst.Module, ctx: Context):
        fn = module_function(module, "get_flops")
        done = _state(as_ast(fn))
        if done:
            return (module, *done)
        if not m.findall(fn, _STRIDE):
            raise RecipeError("get_flops has no `stride = ...` and no full-size input; edit it by hand")
        # say why, on the line itself
        comment = cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"{MARK} profile at 640, not the 32x32 stride")
        )

        def fix(line, _):
            return line.with_changes(body=[line.body[0].with_changes(value=cst.Integer("640"))], trailing_whitespace=comment)

        new = m.replace(fn, m.SimpleStatementLine(body=[_STRIDE]), fix)
        return replace_within(module, fn, fn, new), APPLIED, "stride = 640"
