"""block_module — put the MobileNetV2 block class next to yolo.py (per-block tutorial step "add the block class").

Target (new file): `models/mobilenetv2_blocks.py` (`yolov5/models/...` in the PyPI package), from mbpatch's
template `mobilenetv2_blocks`: `InvertedResidual(c1, c2, s, t)`, the block of the MobileNetV2 paper with
its activations spelled out (ReLU6 after the expansion and the depthwise conv, none after the linear
projection). The tutorial built it from YOLOv5's `Conv(..., act='ReLU')`; YOLOv5's Conv takes True, False
or an nn.Module, so that string silently meant *no* activation anywhere in the backbone. The block imports
only torch, so it works the same in every version.

Versions: every layout and version. Only for the per-block style (`--style blocks`).
Already applied: the file exists with our text, or a file of that name defines `InvertedResidual` (kept).
Refused: a file of that name exists and does not define `InvertedResidual`.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .. import NOT_NEEDED, Context, Outcome, Recipe
from ..cst_anchors import MARK
from .add_modules import HEADER, source_file
from .layout import BLOCK_CLASS, BLOCK_MODULE, BLOCKS, not_this_style


def block_source() -> str:
    from ...templates import TEMPLATE_DIR

    return (TEMPLATE_DIR / f"{BLOCK_MODULE}.py").read_text(encoding="utf-8")


class BlockModule(Recipe):
    name = "block_module"
    step = "per-block style: add the InvertedResidual block class under models/ (real ReLU6 activations)"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BLOCKS):
            return []
        return [f"{ctx.checkout.files['models_dir']}/{BLOCK_MODULE}.py"]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BLOCKS)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        (path,) = self.targets(ctx)
        text = HEADER.format(mark=MARK, what="MobileNetV2 block source", family=BLOCK_MODULE) + block_source()
        return source_file(path, text, [BLOCK_CLASS], sources)
