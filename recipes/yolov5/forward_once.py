"""forward_once — the forward loop stores the backbone's maps in five slots (tutorial step "replace _forward_once").

Target: `_forward_once` in `models/yolo.py` (anchor A9): a method of `class Model` in git v6.0/v6.1 and
PyPI 6.0.x/6.1.x, of `class BaseModel` from v6.2 / PyPI 6.2.3 on. Its signature is
`(self, x, profile=False, visualize=False)`, except later master, which dropped feature visualization:
`(self, x, profile=False)`. Found by the method name and its `for m in self.model:` loop, in whichever
class has it. Only `x = m(x)` and the `y.append(...)` after it move, into the `else` of:

    if hasattr(m, "backbone"):
        x = m(x)
        x = [None] * (5 - len(x)) + list(x)
        y.extend(x[j] if j in self.save else None for j in range(len(x)))
        x = x[-1]
    else:
        x = m(x)  # run
        y.append(x if m.i in self.save else None)  # save output

so `if profile:` before and `if visualize: feature_visualization(x, ...)` after see a tensor, as they
expect (the stock loop would hand the list to `feature_visualization`, which reads `x.shape`).

Already applied: the loop has a top-level `if hasattr(m, "backbone")` (or `getattr`).
Not needed: the per-block style (`--style blocks`).
INVALID (before): the backbone's list is stored as one slot of `y` and passed on as `x` to SPPF.
"""

from __future__ import annotations

from typing import List, Tuple

import libcst as cst

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from .. import cst_match as m
from ..cst_anchors import forward_loop, loop_is_backbone_aware, make_loop_backbone_aware, methods
from .layout import BACKBONE, not_this_style


def forward_once_loops(module: cst.Module) -> List[Tuple[str, cst.For]]:
    """(class name, loop) for every `_forward_once` with a `for m in self.model:` loop."""
    out = []
    for cls in module.body:
        if not isinstance(cls, cst.ClassDef):
            continue
        for fn in methods(cls):
            if fn.name.value == "_forward_once":
                loop = forward_loop(fn, sliced=False)
                if loop is not None:
                    out.append((cls.name.value, loop))
    return out


class ForwardOnce(ModuleRecipe):
    name = "forward_once"
    step = "make _forward_once (class Model up to v6.1, BaseModel after) put the backbone's maps in five slots of y"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BACKBONE) or None

    def transform(self, module: cst.Module, ctx: Context):
        found = forward_once_loops(module)
        if len(found) != 1:
            raise RecipeError(
                f"expected one `_forward_once` with a `for m in self.model:` loop (in class Model or BaseModel), "
                f"found {len(found)}; restore it or edit by hand"
            )
        owner, loop = found[0]
        if loop_is_backbone_aware(loop):
            return module, ALREADY, f"{owner}._forward_once handles backbone lists"
        new = make_loop_backbone_aware(loop)
        return m.replace_node(module, loop, new), APPLIED, f"backbone branch in {owner}._forward_once"
