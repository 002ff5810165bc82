"""The YOLOv5 recipes (SPEC §4), one per tutorial step, in the order they are applied.

Two tutorial styles, chosen with `mbpatch apply --style`:
- `backbone` (default): the whole backbone (RepViT, MobileNetV2/V4) is yaml layer 0 and returns four maps;
  add_modules, register, channel_index, forward_once, flops and model_yaml apply.
- `blocks`: MobileNetV2 built from inverted-residual blocks as ordinary, channel-scaled layers (the
  MobileNetV2 tutorial); block_module, block_register and block_yaml apply. Only `--backbone mobilenetv2`.
The recipes of the other style report "not needed". Both styles can be applied to one checkout (they stack).
"""

from __future__ import annotations

from pathlib import Path

from .. import Context
from ..build_plan import BuildPlan, PlanError
from .add_modules import AddModules
from .block_module import BlockModule
from .block_register import BlockRegister
from .block_yaml import HEAD_SCALE, BlockYaml
from .block_yaml import out_path as block_out
from .channel_index import ChannelIndex
from .flops import Flops
from .forward_once import ForwardOnce
from .fuse import Fuse
from .layout import BACKBONE, BLOCK_BACKBONES, BLOCKS, STYLES, prefix_of, style
from .model_yaml import TASKS, ModelYaml, stock_path
from .model_yaml import out_path as backbone_out
from .optimizer_groups import OptimizerGroups
from .register import Register
from .stride_probe import StrideProbe

RECIPES = [
    AddModules(),
    Register(),
    ChannelIndex(),
    ForwardOnce(),
    Flops(),
    OptimizerGroups(),
    StrideProbe(),
    Fuse(),
    ModelYaml(),
    BlockModule(),
    BlockRegister(),
    BlockYaml(),
]
ARCHS = ("yolov5",)


def build_plan(ctx: Context) -> BuildPlan:
    """What verification builds: the stock yaml of the scale and task and ours, with the checkout's model class.

    Also the place that refuses, before anything is planned, a style/backbone/task combination that does not exist.
    """
    co = ctx.checkout
    chosen = style(ctx)
    task = getattr(ctx, "task", "detect")
    if chosen not in STYLES:
        raise PlanError(f"unknown --style {chosen}; choose one of: {', '.join(STYLES)}", step="style")
    if chosen == BLOCKS and ctx.backbone.id not in BLOCK_BACKBONES:
        raise PlanError(
            f"--style blocks builds MobileNetV2 from inverted-residual blocks; it has no {ctx.backbone.id} "
            "variant. Use --backbone mobilenetv2, or --style backbone for this backbone",
            step="style",
        )
    if task not in TASKS:
        raise PlanError(f"--arch yolov5 has no {task} task; it has: {', '.join(TASKS)}", step="task")
    if task != "detect" and chosen == BLOCKS:
        raise PlanError(f"--style blocks writes the detection model only; use --style backbone for --task {task}",
                        step="task")
    scale = HEAD_SCALE if chosen == BLOCKS else ctx.scale
    stock = stock_path(ctx, scale)
    if not (co.root / stock).is_file():
        if task == "segment":
            raise PlanError(f"this YOLOv5 checkout has no {stock} (segmentation arrived in v7.0, PyPI yolov5 "
                            "6.2); upgrade the checkout or drop --task segment", step="task")
        raise PlanError(f"this YOLOv5 checkout has no {stock}; restore it (every YOLOv5 ships yolov5n/s/m/l/x.yaml)")
    out = block_out(ctx) if chosen == BLOCKS else backbone_out(ctx)
    model = "SegmentationModel" if task == "segment" else "Model"
    script = "segment/train.py" if task == "segment" else "train.py"
    return BuildPlan(stock, out, model, prefix_of(co) + "models", False, scale, task, "yolov5", script,
                     out.rsplit("/", 1)[-1])


def training_snippet(ctx: Context, patched: Path) -> str:
    """The command that trains the patched model (a path to its yaml), for this layout and task."""
    co = ctx.checkout
    seg = getattr(ctx, "task", "detect") == "segment"
    data = "coco128-seg.yaml" if seg else "coco128.yaml"
    args = f"--img 640 --batch-size 16 --epochs 100 --data {data} --weights ''"
    script = "segment/train.py" if seg else "train.py"
    if co.layout == "git":
        cfg = Path(patched).resolve().relative_to(co.root.resolve()).as_posix()
        return f"# in {co.root}\npython {script} {args} --cfg {cfg}"
    module = "yolov5.segment.train" if seg else "yolov5.train"
    return f"# the installed yolov5 package at {co.package}\npython -m {module} {args} --cfg {patched}"


__all__ = ["RECIPES", "ARCHS", "TASKS", "BACKBONE", "BLOCKS", "STYLES", "build_plan", "training_snippet"]
