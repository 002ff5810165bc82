"""fuse — the checkout's own `model.fuse()` also folds the backbone (not a tutorial step: deploy speed).

Target: `fuse` in `models/yolo.py`: a method of `class Model` in git v6.0/v6.1 and PyPI 6.0.x/6.1.x, of
`class BaseModel` from v6.2 / PyPI 6.2.3 on (v7.0 and master too). `detect.py`, `val.py` and `export.py` reach
it through `attempt_load(..., fuse=True)` / `DetectMultiBackend`. YOLOv5 folds only its own `Conv`/`DWConv`;
the edit (see `recipes/fuse_backbone.py`) adds one loop before that which calls `reparameterize()` on every
module that has it: the whole backbone of `--style backbone`, each `InvertedResidual` of `--style blocks`.

Already applied: `fuse` calls `.reparameterize()` (ours, or one written by hand).
Not needed: every release's fuse() misses mbpatch's layers; only a trimmed file without fuse() says so.

VALID (after):  for m in list(self.model.modules()):  # mbpatch: ...
                    if hasattr(m, "reparameterize"): m.reparameterize()
INVALID (stock v7.0): `for m in self.model.modules(): if isinstance(m, (Conv, DWConv)) and hasattr(m, 'bn'):`
"""

from __future__ import annotations

import libcst as cst

from .. import ALREADY, Context, ModuleRecipe
from ..fuse_backbone import add_fuse_hook, calls_hook_ast

OWNERS = ("BaseModel", "Model")  # v6.2 on, then v6.0/v6.1 (where BaseModel does not exist)


class Fuse(ModuleRecipe):
    name = "fuse"
    step = "Model.fuse() also folds the backbone (Conv+BN, RepViT branches, layer scale) for deployment"
    role = "yolo"
    kinds = ("yolov5",)

    def precheck(self, text: str, ctx: Context):
        if calls_hook_ast(text, OWNERS):
            return ALREADY, "fuse() lets the backbone fold itself"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        return add_fuse_hook(module, OWNERS)
