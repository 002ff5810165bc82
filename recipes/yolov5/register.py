"""register — make parse_model know the backbone (tutorial step "import it into yolo.py, add its branch").

Target: `models/yolo.py`, every version (git v6.0 to master, PyPI 6.0.x to 7.0.x).

What the tutorials do by hand, and this recipe does by structure (anchors A1-A4 of ref/yolov5-versions.md):
1. `from <prefix>models.<family> import <names>` right after the `models.common` import: `parse_model`
   resolves yaml names with `eval(m)` in yolo.py's globals, and master's explicit import list would not
   bring a name in from elsewhere. `<prefix>` comes from that import ('' git, 'yolov5.' PyPI);
2. `backbone = False` once, before the layer loop (it stays True for every layer after the backbone);
3. `t = m` as the loop's first statement: the yaml name, shown in the summary for the backbone row
   (YOLOv5's own `t = str(m)[8:-2]` would print the module's repr for an instance);
4. a first branch of the channel-rule chain (the `if m in {...}` after `n = n_ = ...`):
   `if m in {<names>}: m = m(*args); c2 = m.width_list; backbone = True`; the original chain (list,
   tuple, set or master's one-member-per-line set) becomes its `elif`s, untouched.

Already applied: each part is recognised on its own, whoever wrote it: an import of the backbone's names
from `<prefix>models.<family>` (star or named), an assignment to `backbone` before the loop, `t = m` in the
loop, and a chain branch that sets `backbone = True` (missing names are added to its set).
Not needed: the per-block style (`--style blocks`), whose layers are ordinary modules.

VALID (after):
    backbone = False
    for i, (f, n, m, args) in enumerate(d['backbone'] + d['head']):
        t = m
        m = eval(m) if isinstance(m, str) else m
        ...
        if m in {RepViTM1, repvit_m1}:
            m = m(*args)
            c2 = m.width_list
            backbone = True
        elif m in {Conv, GhostConv, ...}:
INVALID (before): `NameError: name 'RepViTM1' is not defined` from `eval(m)`.
"""

from __future__ import annotations

import libcst as cst

from .. import ALREADY, APPLIED, Context, ModuleRecipe
from ..backbone_branch import ensure_backbone_branch
from .layout import BACKBONE, ensure_import, not_this_style

class Register(ModuleRecipe):
    name = "register"
    step = "import the backbone into models/yolo.py and add its parse_model branch (c2 = width_list, backbone = True)"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BACKBONE) or None

    def transform(self, module: cst.Module, ctx: Context):
        names = list(ctx.backbone.names)
        module, changed = ensure_import(module, ctx.backbone.family, names, "backbone added by mbpatch")
        module, done = ensure_backbone_branch(module, names)
        done = (["import"] if changed else []) + done
        if not done:
            return module, ALREADY, "import, flag, yaml name and branch present"
        return module, APPLIED, "added " + "; ".join(done)
