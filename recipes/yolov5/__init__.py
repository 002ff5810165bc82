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

from ... import MbpatchError
from ...verify import Target
from .. import Context
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
from .model_yaml import ModelYaml, stock_path
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


def verify_target(ctx: Context) -> Target:
    """What verification builds: the stock yaml of the scale and ours, with the checkout's `Model`.

    Also the place that refuses, before anything is planned, a style/backbone pair that does not exist.
    """
    co = ctx.checkout
    chosen = style(ctx)
    if chosen not in STYLES:
        raise MbpatchError(f"unknown --style {chosen}; choose one of: {', '.join(STYLES)}", step="style")
    if chosen == BLOCKS and ctx.backbone.id not in BLOCK_BACKBONES:
        raise MbpatchError(
            f"--style blocks builds MobileNetV2 from inverted-residual blocks; it has no {ctx.backbone.id} "
            "variant. Use --backbone mobilenetv2, or --style backbone for this backbone",
            step="style",
        )
    scale = HEAD_SCALE if chosen == BLOCKS else ctx.scale
    stock = stock_path(ctx, scale)
    if not (co.root / stock).is_file():
        raise MbpatchError(
            f"this YOLOv5 checkout has no {stock}; restore it (every YOLOv5 ships yolov5n/s/m/l/x.yaml)",
            file=str(co.root), step="arch",
        )
    out = block_out(ctx) if chosen == BLOCKS else backbone_out(ctx)
    return Target(
        co.root, prefix_of(co) + "models", "Model", co.root / stock, co.root / out,
        False, scale, ctx.nc, kind="yolov5",
    )


def training_snippet(ctx: Context, target: Target) -> str:
    """The command that trains the patched model, for this layout."""
    co = ctx.checkout
    args = "--img 640 --batch-size 16 --epochs 100 --data coco128.yaml --weights ''"
    if co.layout == "git":
        cfg = Path(target.patched).resolve().relative_to(co.root.resolve()).as_posix()
        return f"# in {co.root}\npython train.py {args} --cfg {cfg}"
    return f"# the installed yolov5 package at {co.package}\npython -m yolov5.train {args} --cfg {target.patched}"


__all__ = ["RECIPES", "ARCHS", "BACKBONE", "BLOCKS", "STYLES", "verify_target", "training_snippet"]
