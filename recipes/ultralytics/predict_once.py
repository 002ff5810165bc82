"""predict_once — the forward loop stores the backbone's maps in five slots (tutorial step "replace _predict_once").

Target: `ultralytics/nn/tasks.py` `BaseModel`, the method that loops `for m in self.model:` —
`_forward_once` (8.0.0-8.0.110), `predict` (8.0.111) or `_predict_once` (8.0.112+). Found by its loop, not
its name. Variants P0-P9 differ around the loop (visualize, embed, profile), but every one has
`x = m(x)` followed by `y.append(...)`; only those two statements move, into the `else` of:

    if hasattr(m, "backbone"):
        x = m(x)
        x = [None] * (5 - len(x)) + list(x)
        y.extend(x[j] if j in self.save else None for j in range(len(x)))
        x = x[-1]
    else:
        x = m(x)  # run
        y.append(x if m.i in self.save else None)  # save output

Already applied: the loop has a top-level `if hasattr(m, "backbone")` (or `getattr`), as mbpatch and the
tutorials write it.
INVALID (before): `x = m(x)` stores the backbone's list as one slot and passes the list on as `x`.
"""

from __future__ import annotations

import libcst as cst

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import class_def, forward_loop, loop_is_backbone_aware, make_loop_backbone_aware, methods, replace_within


class PredictOnce(ModuleRecipe):
    name = "predict_once"
    step = "make BaseModel's forward loop put the backbone's maps in five slots of y"
    role = "tasks"

    def transform(self, module: cst.Module, ctx: Context):
        cls = class_def(module, "BaseModel")
        if cls is None:
            raise RecipeError("no `class BaseModel` in tasks.py; restore it")
        loops = [lp for fn in methods(cls) for lp in [forward_loop(fn, sliced=False)] if lp is not None]
        if len(loops) != 1:
            raise RecipeError(f"expected one `for m in self.model:` loop in BaseModel, found {len(loops)}")
        loop = loops[0]
        if loop_is_backbone_aware(loop):
            return module, ALREADY, "forward loop handles backbone lists"
        return replace_within(module, cls, loop, make_loop_backbone_aware(loop)), APPLIED, "backbone branch in the forward loop"
