"""stride_probe — with `--weights`, building the model leaves the loaded BatchNorm statistics alone.

Not a tutorial step (the tutorials train from scratch): it is what makes `--weights` keep its promise.
Target: `models/yolo.py`, the `__init__` of `class Model` (git v6.0/v6.1, PyPI 6.0.x/6.1.x) or of
`class DetectionModel` (v6.2 on, where `Model = DetectionModel`). Every YOLOv5 learns the strides from one
forward pass of a zero image in train mode, which updates every BatchNorm's running statistics, the loaded
ImageNet ones of the backbone included (see `recipes/stride_probe.py`).

Edit: `self.model.eval()` and `m.training = True` before the probe statement, `self.model.train()` after.
YOLOv5's heads (Detect, Segment) read `self.training` only, so the probe still sees their raw maps.
Already applied: an earlier `self.model.eval()` in the probe's block with the mbpatch mark.
Not needed: without `--weights`; the per-block style (no checkpoint to keep).

VALID:   self.model.eval(); m.training = True; m.stride = torch.tensor([...]); self.model.train()
INVALID: m.stride = torch.tensor([s / x.shape[-2] for x in forward(torch.zeros(1, ch, s, s))])  # train mode
"""

from __future__ import annotations

import libcst as cst

from .. import Context, ModuleRecipe
from ..stride_probe import NO_WEIGHTS, protect_stride_probe
from .layout import BACKBONE, not_this_style


class StrideProbe(ModuleRecipe):
    name = "stride_probe"
    step = "with --weights: Model probes its strides in eval mode (BatchNorm statistics kept)"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        if not ctx.weights:
            return NO_WEIGHTS
        return not_this_style(ctx, BACKBONE) or None

    def transform(self, module: cst.Module, ctx: Context):
        return protect_stride_probe(module, ("DetectionModel", "Model"))
