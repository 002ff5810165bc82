"""stride_probe — with `--weights`, building the model leaves the loaded BatchNorm statistics alone.

Not a tutorial step (the tutorials train from scratch): it is what makes `--weights` keep its promise.
Target: `DetectionModel.__init__` in `ultralytics/nn/tasks.py`, every release. Up to 8.3.x it learns the
strides from one forward pass of a zero image in train mode, which updates every BatchNorm's running
statistics, the loaded ImageNet ones of the backbone included (see `recipes/stride_probe.py`).

Edit: `self.model.eval()` and `m.training = True` before the probe statement, `self.model.train()` after
(what later releases do themselves).
Already applied: an earlier `self.model.eval()` in the probe's block with the mbpatch mark.
Not needed: without `--weights` (freshly initialised statistics have nothing to lose); for rtdetr, whose
stride is set without a forward pass; releases that already run the probe in eval mode (8.3.x and later).

VALID (8.4.190, upstream):  self.model.eval(); m.training = True; m.stride = torch.tensor([...])
INVALID (8.2.103):          m.stride = torch.tensor([s / x.shape[-2] for x in _forward(torch.zeros(1, ch, s, s))])
"""

from __future__ import annotations

import libcst as cst

from .. import Context, ModuleRecipe
from ..stride_probe import NO_WEIGHTS, protect_stride_probe


class StrideProbe(ModuleRecipe):
    name = "stride_probe"
    step = "with --weights: DetectionModel probes its strides in eval mode (BatchNorm statistics kept)"
    role = "tasks"

    def applies(self, ctx: Context):
        if not ctx.weights:
            return NO_WEIGHTS
        if ctx.arch == "rtdetr":
            return "RT-DETR sets its stride without a forward pass"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        return protect_stride_probe(module, ("DetectionModel",))
