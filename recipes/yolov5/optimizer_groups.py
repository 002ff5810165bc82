"""optimizer_groups — every backbone parameter is trained, not only those named `weight` or `bias`.

Not a tutorial step: the tutorials never noticed. Target: the loop that sorts parameters into the three
optimizer groups (anchor A14), `train()` in `train.py` (git v6.0, PyPI 6.0.x) or `smart_optimizer` in
`utils/torch_utils.py` (v6.1/v6.2, PyPI 6.1.0-6.2.2); the edit is in `recipes/optimizer_groups.py`. Without it the
MobileNetV4 hybrids' learnable layer scale `gamma` is in no group and never trains.

Already applied: the `mbpatch_grouped = ...` statement right after the loop.
Not needed: v7.0 and PyPI 6.2.3 on (the loop walks `named_parameters(recurse=0)`); the per-block style (plain conv
and BN layers).

VALID (7.0.14):   for p_name, p in v.named_parameters(recurse=0): ...
INVALID (6.1.9):  for v in model.modules(): if hasattr(v, 'bias') ...: g[2].append(v.bias) ...
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .. import NOT_NEEDED, Context, Outcome, Recipe
from ..optimizer_groups import group_every_parameter
from .layout import BACKBONE, not_this_style


class OptimizerGroups(Recipe):
    name = "optimizer_groups"
    step = "the optimizer groups take every parameter, not only weight/bias (MobileNetV4 hybrid layer scale)"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BACKBONE):
            return []
        return [t for t in (ctx.checkout.files.get("train"), ctx.checkout.files.get("torch_utils")) if t]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BACKBONE)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        return group_every_parameter(self.targets(ctx), sources)
