"""block_yaml — write the per-block MobileNetV2 model yaml (per-block tutorial step "write the yaml").

Target (new file): `models/yolov5-mobilenetv2-blocks.yaml` beside the stock yamls.

Contents, as in the MobileNetV2 tutorial:
- backbone: a stem `Conv [32, 3, 2]`, then the inverted-residual rows of MobileNetV2's Table 1
  (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
  (6, 320, 1, 1). A row is `[c, s, t]` with `n` repeats; YOLOv5 builds the `n` repeats of a row with the
  same arguments, so a stage whose first block changes the stride or the width is split into that block
  and a row for the other `n - 1` (twelve rows in all). Then `SPPF [1024, 5]`.
- head: the v6.0 head of the checkout's `yolov5s.yaml` with its depth and width multiples folded into the
  numbers (Conv 256 / C3 256 / Conv 128 / C3 128 / ..., C3 repeats 1), reading the stride-8 block (layer 5),
  the stride-16 block (layer 9) and SPPF (layer 13);
- `depth_multiple: 1.0` and `width_multiple: 1.0`: the tutorial's model (347 layers, 5,662,397 parameters,
  11.5 GFLOPs on v7.0 code). Edit the two multiples to scale blocks and head together: the blocks are
  registered in the channel-scaled set. `--scale` does not apply to this style.

Already applied: the file exists with exactly this text. Refused: it exists with other content.
Not needed: the whole-backbone style.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .. import NOT_NEEDED, Context, Outcome, Recipe
from ..cst_anchors import MARK
from .layout import BLOCK_CLASS, BLOCKS, not_this_style
from .model_yaml import render_or_fail, stock_path, write_new
from .yamls import fold, load_stock, parameters, reindex, row_text, section

# MobileNetV2 (arXiv 1801.04381) Table 1, after the stem: expansion t, channels c, repeats n, first stride s
TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM = 32
HEAD_SCALE = "s"  # the tutorial's head is yolov5s's


def block_rows():
    """[(row, stride after it)] for the twelve block rows; the stem has stride 2."""
    rows, stride, c_in = [], 2, STEM
    for t, c, n, s in TABLE:
        stride *= s
        if n == 1 or s != 1 or c != c_in:
            rows.append(([-1, 1, BLOCK_CLASS, [c, s, t]], stride))
            n -= 1
        if n:
            rows.append(([-1, n, BLOCK_CLASS, [c, 1, t]], stride))
        c_in = c
    return rows


def out_path(ctx: Context) -> str:
    return f"{ctx.checkout.files['models_dir']}/yolov5-mobilenetv2-blocks.yaml"


def render(ctx: Context, stock_text: str, stock: str) -> str:
    d = load_stock(stock_text, stock)
    blocks = block_rows()
    new_for_stride = {}
    for k, (_, stride) in enumerate(blocks, start=1):
        new_for_stride[stride] = k
    tail, head_rows = reindex(d, stock, new_for_stride, len(blocks) + 1)
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    out = [
        f"{MARK} YOLOv5 with a MobileNetV2 backbone made of {BLOCK_CLASS} layers (the per-block tutorial style).",
        f"{MARK} Backbone: stem Conv 32, the blocks of MobileNetV2 Table 1 as [out channels, stride, expansion t],",
        f"{MARK} then SPPF 1024; head: the v6.0 head of {stock.rsplit('/', 1)[-1]} with its multiples folded in.",
        f"{MARK} The blocks are channel-scaled layers: depth_multiple and width_multiple scale them with the head.",
        "",
    ]
    out += parameters(d, ctx.nc, 1.0, 1.0)
    bb = [(row_text([-1, 1, "Conv", [STEM, 3, 2]]), "0-P1/2")]
    seen = {2}
    for k, (row, stride) in enumerate(blocks, start=1):
        label = f"{k}-P{stride.bit_length() - 1}/{stride}" if stride not in seen else str(k)
        seen.add(stride)
        bb.append((row_text(row), label))
    bb += [(row_text(r), str(i)) for i, r in tail]
    head = [(row_text(fold(r, gd, gw)), str(i)) for i, r in head_rows]
    out += ["", "# MobileNetV2 backbone (inverted-residual blocks)"] + section("backbone", bb)
    out += ["", "# YOLOv5 v6.0 head"] + section("head", head)
    return "\n".join(out) + "\n"


class BlockYaml(Recipe):
    name = "block_yaml"
    step = "per-block style: write models/yolov5-mobilenetv2-blocks.yaml (stem Conv, 12 block rows, SPPF 1024, v6.0 head)"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BLOCKS):
            return []
        return [stock_path(ctx, HEAD_SCALE), out_path(ctx)]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BLOCKS)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        stock, out = self.targets(ctx)
        outcome = write_new(out, render_or_fail(ctx, sources, stock, render), sources)
        outcome.detail += " (the tutorial's model: yolov5s head, multiples 1.0; --scale does not apply)"
        return outcome
