"""fuse — the checkout's own `model.fuse()` also folds the backbone (not a tutorial step: deploy speed).

Target: `BaseModel.fuse` in `ultralytics/nn/tasks.py`, every release from 8.0.0 to 8.4.190 (known forms: the
bare loop of 8.0.0-8.0.x, `if not self.is_fused():` around it later, the QAT `skip` tuple of 8.4.x). Val,
predict, export and `attempt_load_weights(fuse=True)` all call it. The release folds only its own
`Conv`/`Conv2`/`DWConv`/`ConvTranspose`/`RepConv`/`RepVGGDW`; the edit (see `recipes/fuse_backbone.py`) adds
one loop before that which calls `reparameterize()` on every module that has it: mbpatch's backbones fold
their Conv+BN pairs, RepViT's token mixers become one depthwise conv, MobileNetV4's layer scale goes into the
projection conv.

Already applied: `BaseModel.fuse` calls `.reparameterize()` (ours, or one written by hand).
Not needed: every release has a fuse() that misses the backbone; only a file without `BaseModel.fuse` says so.

VALID (after):  for m in list(self.model.modules()):  # mbpatch: ...
                    if hasattr(m, "reparameterize"): m.reparameterize()
                for m in self.model.modules(): ...
INVALID (stock 8.4.190): the backbone keeps every BatchNorm2d after `model.fuse()`
"""

from __future__ import annotations

import libcst as cst

from .. import ALREADY, Context, ModuleRecipe
from ..fuse_backbone import add_fuse_hook, calls_hook_ast

OWNERS = ("BaseModel",)


class Fuse(ModuleRecipe):
    name = "fuse"
    step = "BaseModel.fuse() also folds the backbone (Conv+BN, RepViT branches, layer scale) for deployment"
    role = "tasks"

    def precheck(self, text: str, ctx: Context):
        if calls_hook_ast(text, OWNERS):
            return ALREADY, "BaseModel.fuse() lets the backbone fold itself"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        return add_fuse_hook(module, OWNERS)
