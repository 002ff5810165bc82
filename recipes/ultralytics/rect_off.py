"""rect_off — training/validation batches stay square (tutorial step "turn off rect").

Target: `ultralytics/models/yolo/detect/train.py` (8.0.150+) or `ultralytics/yolo/v8/detect/train.py`:
`DetectionTrainer.build_dataset` (8.0.89+) passes `rect=mode == "val"` to `build_yolo_dataset`; before
it, `get_dataloader` passes `rect=self.args.rect or mode == 'val'` / `rect=mode == 'val'`.

Only for backbones whose attention needs square inputs, or when the user asks (`--rect-off`): mbpatch's
own backbones run at any size that is a multiple of 32, so by default this step is "not needed".
Note: `build_yolo_dataset` also ORs in the `rect` training argument, so do not pass `rect=True` to train.

Edit: every `rect=<expression mentioning mode>` keyword in those calls becomes `rect=False`.
Already applied: no such keyword left and at least one `rect=False`.

VALID:   build_yolo_dataset(..., rect=False, stride=gs)
INVALID: build_yolo_dataset(..., rect=mode == "val", stride=gs)
"""

from __future__ import annotations

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, ModuleRecipe

_RECT = m.Arg(keyword=m.Name("rect"))


class RectOff(ModuleRecipe):
    name = "rect_off"
    step = "rect=False in DetectionTrainer.build_dataset (square batches)"
    role = "detect_train"

    def applies(self, ctx: Context):
        if ctx.rect_off:
            return None
        return f"{ctx.backbone.id} accepts any input size (pass --rect-off to force square batches)"

    def transform(self, module: cst.Module, ctx: Context):
        args = [a for a in m.findall(module, _RECT)]
        live = [a for a in args if m.findall(a.value, m.Name("mode"))]
        if not live:
            if any(m.matches(a.value, m.Name("False")) for a in args):
                return module, ALREADY, "rect=False"
            # 8.0.0/8.0.6: validation is never rect; rect follows the `rect` training argument alone
            return module, NOT_NEEDED, "this release uses rect only when you pass rect=True"
        mentions_mode = m.MatchIfTrue(lambda v: bool(m.findall(v, m.Name("mode"))))
        new = m.replace(module, m.Arg(keyword=m.Name("rect"), value=mentions_mode),
                        lambda node, _: node.with_changes(value=cst.Name("False")))
        return new, APPLIED, f"rect=False ({len(live)} call{'s' if len(live) > 1 else ''})"
