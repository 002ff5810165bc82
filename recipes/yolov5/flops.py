"""flops — the model summary profiles FLOPs at 640x640, not at the 32x32 stride (tutorial step "fix the FLOPs").

Target: `model_info` in `utils/torch_utils.py` (anchor A12'), git v6.0-v7.0 and every PyPI release.
There it profiles one `stride x stride` image, `stride = max(int(model.stride.max()), 32)`, i.e. 32x32,
and scales the count by `(640 / stride)^2`; any exception silently drops the GFLOPs figure. A backbone
whose maps at 32x32 are 1x1 or smaller (window or fixed-size attention), or whose cost is not linear in the
image area (attention), prints no or wrong GFLOPs for the patched model.

Edit: the value of `stride = ...` inside model_info becomes `640`; the rest of the body divides by `stride`,
so the figure printed for imgsz 640 is measured, not extrapolated. (Like the Ultralytics flops_stride step.)
Already applied: `stride = 640`.
Not needed: later master, whose `model_info` comes from the `ultralytics` package (it already falls back to
the full image size); the per-block style, whose blocks are ordinary convolutions.

VALID:   stride = 640  # mbpatch: ...
INVALID: stride = max(int(model.stride.max()), 32) if hasattr(model, 'stride') else 32
"""

from __future__ import annotations

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import MARK
from .layout import BACKBONE, not_this_style

_STRIDE = m.Assign(targets=[m.AssignTarget(m.Name("stride"))])


class Flops(ModuleRecipe):
    name = "flops"
    step = "model_info profiles FLOPs at 640x640 instead of the 32x32 stride"
    role = "torch_utils"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BACKBONE) or None

    def transform(self, module: cst.Module, ctx: Context):
        fns = [s for s in module.body if isinstance(s, cst.FunctionDef) and s.name.value == "model_info"]
        if not fns:
            return module, NOT_NEEDED, "no model_info here (it comes from the ultralytics package, which profiles the full size)"
        fn = fns[0]
        found = m.findall(fn, _STRIDE)
        if not found:
            raise RecipeError("model_info has no `stride = ...`; make it profile a 640x640 input by hand")
        if all(m.matches(a.value, m.Integer("640")) for a in found):
            return module, ALREADY, "stride = 640"
        new_fn = fn
        for assign in found:
            new_fn = m.replace_node(new_fn, assign, assign.with_changes(value=cst.Integer("640")))
        comment = cst.TrailingWhitespace(
            whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment(f"{MARK} profile at 640, not the 32x32 stride")
        )
        for line in m.findall(new_fn, m.SimpleStatementLine(body=[_STRIDE])):
            new_fn = m.replace_node(new_fn, line, line.with_changes(trailing_whitespace=comment))
        return m.replace_node(module, fn, new_fn), APPLIED, "stride = 640 in model_info"
