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
from ..cst_anchors import MARK, module_function, replace_within

_STRIDE = m.Assign(targets=[m.AssignTarget(m.Name("stride"))])
_FULL_SIZE = m.Tuple(elements=[m.ZeroOrMore(), m.StarredElement(m.Name("imgsz")), m.ZeroOrMore()])


def _full_size_input(fn) -> bool:
    """`ast` twin of _FULL_SIZE: a tuple holding `*imgsz` somewhere in the function."""
    return any(isinstance(t, ast.Tuple) and any(isinstance(e, ast.Starred) and isinstance(e.value, ast.Name)
                                                and e.value.id == "imgsz" for e in t.elts) for t in ast.walk(fn))


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
        if len(fns) == 1 and _full_size_input(fns[0]):
            return NOT_NEEDED, "get_flops already profiles the full image size"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        fn = module_function(module, "get_flops")
        if m.findall(fn, _FULL_SIZE):
            return module, NOT_NEEDED, "get_flops already profiles the full image size"
        found = m.findall(fn, _STRIDE)
        if not found:
            raise RecipeError("get_flops has no `stride = ...` and no full-size input; edit it by hand")
        if all(m.matches(a.value, m.Integer("640")) for a in found):
            return module, ALREADY, "stride = 640"
        # say why, on the line itself
        comment = cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"{MARK} profile at 640, not the 32x32 stride")
        )

        def fix(line, _):
            return line.with_changes(body=[line.body[0].with_changes(value=cst.Integer("640"))], trailing_whitespace=comment)

        new = m.replace(fn, m.SimpleStatementLine(body=[_STRIDE]), fix)
        return replace_within(module, fn, fn, new), APPLIED, "stride = 640"
