"""optimizer_groups — every backbone parameter is trained, not only those named `weight` or `bias`.

Not a tutorial step: the tutorials never noticed. Target: `BaseTrainer.build_optimizer` in
`ultralytics/yolo/engine/trainer.py` (8.0.x before the 8.0.150 move) or `ultralytics/engine/trainer.py`.
Up to 8.0.109 it loops over `model.modules()` and picks up only `v.bias` and `v.weight`, so the
MobileNetV4 hybrids' learnable layer scale `gamma` is in no group and never trains; the edit is in
`recipes/optimizer_groups.py`.

Already applied: the `mbpatch_grouped = ...` statement right after the loop.
Not needed: releases whose loop walks `module.named_parameters(recurse=False)` (8.0.110 and later).

VALID (8.1.20):   for param_name, param in module.named_parameters(recurse=False): ...
INVALID (8.0.50): for v in model.modules(): if hasattr(v, 'bias') ...: g[2].append(v.bias) ...
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .. import Context, Outcome, Recipe
from ..optimizer_groups import group_every_parameter


class OptimizerGroups(Recipe):
    name = "optimizer_groups"
    step = "the optimizer groups take every parameter, not only weight/bias (MobileNetV4 hybrid layer scale)"

    def targets(self, ctx: Context) -> List[str]:
        return [t for t in (ctx.checkout.files.get("trainer"),) if t]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        return group_every_parameter(self.targets(ctx), sources)
