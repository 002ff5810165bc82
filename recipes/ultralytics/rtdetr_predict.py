"""rtdetr_predict — RT-DETR's own forward loop stores the backbone's maps in five slots.

Target: `ultralytics/nn/tasks.py` `RTDETRDetectionModel.predict` (8.0.111+; variants Q0-Q6). It loops
`for m in self.model[:-1]:` and then calls the decoder head with `batch`, so the `BaseModel` fix does not
reach it: without this step RT-DETR fails at its first forward pass. Same edit as predict_once.

Not needed: releases without RT-DETR (before 8.0.111), and archs other than rtdetr.
Already applied: a top-level `if hasattr(m, "backbone")` in that loop.
"""

from __future__ import annotations

import libcst as cst

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import class_def, forward_loop, loop_is_backbone_aware, make_loop_backbone_aware, methods, replace_within


class RtdetrPredict(ModuleRecipe):
    name = "rtdetr_predict"
    step = "make RTDETRDetectionModel.predict put the backbone's maps in five slots of y"
    role = "tasks"

    def applies(self, ctx: Context):
        return None if ctx.arch == "rtdetr" else f"only for --arch rtdetr (this is {ctx.arch})"

    def transform(self, module: cst.Module, ctx: Context):
        cls = class_def(module, "RTDETRDetectionModel")
        if cls is None:
            raise RecipeError("no `class RTDETRDetectionModel` in tasks.py: RT-DETR needs Ultralytics 8.0.111 or later")
        predict = [fn for fn in methods(cls) if fn.name.value == "predict"]
        loop = forward_loop(predict[0], sliced=True) if predict else None
        if loop is None:
            raise RecipeError("RTDETRDetectionModel.predict has no `for m in self.model[:-1]:` loop; restore it")
        if loop_is_backbone_aware(loop):
            return module, ALREADY, "RT-DETR forward loop handles backbone lists"
        return replace_within(module, cls, loop, make_loop_backbone_aware(loop)), APPLIED, "backbone branch in RT-DETR's loop"
