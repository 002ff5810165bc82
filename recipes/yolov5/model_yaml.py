"""model_yaml — write the model yaml with the backbone at layer 0 (tutorial step "write a model yaml").

Target (new file): `models/yolov5<scale>-<backbone id>.yaml` beside the stock `models/yolov5<scale>.yaml`
(`yolov5/models/...` in the PyPI package), e.g. `models/yolov5n-repvit_m1.yaml`; with `--task segment` (v7.0 and
master, PyPI 6.2) `models/segment/yolov5<scale>-seg-<backbone id>.yaml` beside the stock `-seg` yaml, whose head ends in
`Segment [nc, anchors, 32, 256]` and is built with the checkout's `SegmentationModel`.

Contents: the stock file's `nc` (or `--nc`), depth and width multiples and anchors; the backbone as layer 0
(it fills slots 0-4: strides 4/8/16/32 in slots 1-4), then the stock SPPF at 5, then the stock head of the
same scale re-indexed for the five slots: a stock reference to the stride-8 stage (row 4) becomes 2, the
stride-16 stage (row 6) becomes 3, SPPF (row 9) becomes 5, and every head row moves down by 4, so
Detect reads 13, 16 and 19. Relative references that still name the same layer stay relative. The stock
file is read as data (PyYAML), so master's reformatted yaml works too.

Already applied: the file exists with exactly the text this recipe would write.
Refused: a file of that name exists with other content (never overwritten silently), or the stock yaml of
that scale is missing or edited beyond recognition.
Not needed: the per-block style (block_yaml writes that model).

VALID (after, for --scale n): `[-1, 1, RepViTM1, []]` at 0, `[-1, 1, SPPF, [1024, 5]]` at 5, and
`[[13, 16, 19], 1, Detect, [nc, anchors]]` last; with depth 0.33 / width 0.25, as in the RepViT tutorial.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, Outcome, Recipe, RecipeError
from ..cst_anchors import MARK
from .layout import BACKBONE, not_this_style
from .yamls import load_stock, parameters, reindex, row_text, section

SLOTS = {4: 1, 8: 2, 16: 3, 32: 4}  # stride -> slot of the backbone's map


TASKS = ("detect", "segment")  # segment: models/segment/yolov5<scale>-seg.yaml, from v7.0


def _stem(ctx: Context, scale: str) -> str:
    if getattr(ctx, "task", "detect") == "segment":
        return f"segment/yolov5{scale}-seg"
    return f"yolov5{scale}"


def stock_path(ctx: Context, scale: str) -> str:
    return f"{ctx.checkout.files['models_dir']}/{_stem(ctx, scale)}.yaml"


def out_path(ctx: Context) -> str:
    return f"{ctx.checkout.files['models_dir']}/{_stem(ctx, ctx.scale)}-{ctx.backbone.id}.yaml"


def render(ctx: Context, stock_text: str, stock: str) -> str:
    d = load_stock(stock_text, stock)
    tail, head_rows = reindex(d, stock, SLOTS, 5)
    name = stock.rsplit("/", 1)[-1]
    what = "-seg" if getattr(ctx, "task", "detect") == "segment" else ""
    out = [
        f"{MARK} YOLOv5{ctx.scale}{what} with the {ctx.backbone.id} backbone, generated from {name} (its head, re-indexed).",
        f"{MARK} The backbone is layer 0 and fills slots 0-4 (slot 0 empty, strides 4/8/16/32 in 1-4);",
        f"{MARK} later layers are numbered i + 4, as the patched parse_model stores them.",
        "",
    ]
    out += parameters(d, ctx.nc, d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0))
    bb = [(f"[-1, 1, {ctx.backbone.cls}, []]", "0-4: feature maps of strides 4, 8, 16, 32 in slots 1-4")]
    bb += [(row_text(r), str(i)) for i, r in tail]
    head = [(row_text(r), str(i)) for i, r in head_rows]
    out += ["", f"# {ctx.backbone.id} backbone"] + section("backbone", bb)
    out += ["", "# YOLOv5 head"] + section("head", head)
    return "\n".join(out) + "\n"


class ModelYaml(Recipe):
    name = "model_yaml"
    step = "write models/yolov5<scale>-<backbone>.yaml: the backbone at layer 0, SPPF, the stock head re-indexed"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BACKBONE):
            return []
        return [stock_path(ctx, ctx.scale), out_path(ctx)]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BACKBONE)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        stock, out = self.targets(ctx)
        return write_new(out, render_or_fail(ctx, sources, stock, render), sources)


def render_or_fail(ctx: Context, sources: Mapping[str, Optional[str]], stock: str, fn) -> str:
    text = sources.get(stock)
    if text is None:
        raise RecipeError(f"cannot read the stock yaml {stock}; restore it (it ships with every YOLOv5)")
    return fn(ctx, text, stock)


def write_new(out: str, text: str, sources: Mapping[str, Optional[str]]) -> Outcome:
    have = sources.get(out)
    if have == text:
        return Outcome(ALREADY, out)
    if have is not None:
        raise RecipeError(
            f"{out} already exists with other content (yours, or from another --nc); rename or delete it, then apply again"
        )
    return Outcome(APPLIED, out, {out: text})
