"""model_yaml — write the model yaml for the arch with the backbone (tutorial step "write a model yaml").

Target (new file): next to the release's stock yaml — `cfg/models/...` from 8.0.150, `models/...` before,
`yolo/v8/models/` in 8.0.0 — named after arch and backbone: `rtdetr-l-<id>.yaml`, `yolov8-<id>.yaml`,
`yolo11-<id>.yaml` (`yolov8<scale>-<id>.yaml` before 8.0.55, whose yamls carry depth/width multiples).

The head is the release's own stock head, read from its stock yaml (so it is exactly what that release
builds), re-indexed for the 5-slot backbone (SPEC §3): the backbone is layer 0 and fills slots 0-4, so a
stock reference to a backbone stage of stride 8/16/32 becomes 2/3/4, and every later layer moves to its new
position + 4. Relative references that still point at the same layer stay relative. YOLOv8/YOLO11 keep the
stock layers that follow the last backbone stage (SPPF, and C2PSA for YOLO11).

RT-DETR `--head light` is the MobileNetV4 tutorial's lighter variant: RepC3 with e = 0.5 and
`RTDETRDecoder [nc, 256, 300, 4, 8, 3]` (the repc3 step makes e = 0.5 build before 8.3.38).

Already applied: the file exists with exactly the text this recipe would write.
Refused: a file of that name exists with other content (never overwritten silently).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import yaml

from .. import ALREADY, APPLIED, Context, Outcome, Recipe, RecipeError
from ..cst_anchors import MARK


@dataclass(frozen=True)
class ArchSpec:
    stock: Tuple[str, ...]  # stock yaml names to look for, first found wins ({scale} is filled in)
    backbone_len: int  # rows in the stock backbone
    slots: Dict[int, int]  # stock backbone row -> slot of our backbone (stride 8 -> 2, 16 -> 3, 32 -> 4)
    keep_tail: int  # stock backbone rows kept after our backbone (SPPF, C2PSA)
    model: str  # the tasks.py class that builds it
    out: str  # file name of the generated yaml
    since: str  # first release that has it (for the refusal message)


ARCHS: Dict[str, ArchSpec] = {
    "rtdetr": ArchSpec(("rtdetr-l.yaml", "rt-detr-l.yaml"), 10, {3: 2, 7: 3, 9: 4}, 0,
                       "RTDETRDetectionModel", "rtdetr-l-{id}.yaml", "8.0.111"),
    "yolov8": ArchSpec(("yolov8.yaml", "yolov8{scale}.yaml"), 10, {2: 1, 4: 2, 6: 3, 8: 4}, 1,
                       "DetectionModel", "yolov8-{id}.yaml", "8.0.0"),
    "yolo11": ArchSpec(("yolo11.yaml",), 11, {2: 1, 4: 2, 6: 3, 8: 4}, 2,
                       "DetectionModel", "yolo11-{id}.yaml", "8.3.0"),
}
LIGHT_OUT = "rtdetr-light-{id}.yaml"

_ROW = re.compile(r"^(\s*)-\s*\[(.*)\]\s*(#.*)?$")


@dataclass
class YamlPlan:
    stock: str  # path of the stock yaml, relative to the checkout root
    out: str  # path of the generated yaml
    model: str  # DetectionModel or RTDETRDetectionModel
    scaled: bool  # the yaml has `scales:` (the scale is passed as d["scale"]) rather than multiples


def find_stock(checkout, arch: str, scale: str) -> Optional[str]:
    """Relative path of the stock yaml of `arch` in this checkout, or None when the release lacks it."""
    spec = ARCHS[arch]
    cfg = checkout.files.get("cfg_models")
    if not cfg:
        return None
    base = checkout.root / cfg
    for name in spec.stock:
        hits = sorted(base.rglob(name.format(scale=scale)))
        if hits:
            return checkout.rel(hits[0])
    return None


def plan(ctx: Context) -> YamlPlan:
    """Where the yaml comes from and goes; raises RecipeError when the release cannot build the arch."""
    spec = ARCHS[ctx.arch]
    co = ctx.checkout
    if ctx.arch == "rtdetr" and "class RTDETRDetectionModel" not in (co.read(co.files["tasks"]) or ""):
        raise RecipeError(f"Ultralytics {co.version} has no RT-DETR (it arrived in {spec.since}); upgrade or use --arch yolov8")
    stock = find_stock(co, ctx.arch, ctx.scale)
    if stock is None:
        raise RecipeError(
            f"Ultralytics {co.version} has no stock {spec.stock[0]} (the arch arrived in {spec.since}); "
            "upgrade the checkout or pick another --arch"
        )
    scaled = not re.search(r"\d[nslmx]\.yaml$", stock)
    name = (LIGHT_OUT if (ctx.arch == "rtdetr" and ctx.head == "light") else spec.out).format(id=ctx.backbone.id)
    if not scaled:  # per-scale stock files: the scale is in the name, as in the stock ones
        name = name.replace("yolov8-", f"yolov8{ctx.scale}-")
    out = stock.rsplit("/", 1)[0] + "/" + name
    return YamlPlan(stock, out, spec.model, scaled)


# --- yaml text ---------------------------------------------------------------------------------------------


def flow(v) -> str:
    """A yaml flow value as Ultralytics writes them (None and names bare, other strings quoted)."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    s = str(v)
    return s if (s == "None" or s == "nc" or re.fullmatch(r"[A-Za-z_][\w.]*", s) and s[0].isupper()) else f'"{s}"'


def _split_first(inner: str) -> Tuple[str, str]:
    """'[-1, 6], 1, Concat, [1]' -> ('[-1, 6]', '1, Concat, [1]')."""
    inner = inner.strip()
    if inner.startswith("["):
        depth = 0
        for k, c in enumerate(inner):
            depth += (c == "[") - (c == "]")
            if depth == 0:
                return inner[: k + 1], inner[k + 1 :].lstrip(" ,")
    head, _, rest = inner.partition(",")
    return head.strip(), rest.strip()


def _rows(text: str, section: str) -> List[str]:
    """The one-line rows of a yaml section, in order."""
    rows, inside = [], False
    for line in text.splitlines():
        if re.match(rf"^{section}\s*:", line):
            inside = True
            continue
        if inside and re.match(r"^\S", line) and not line.startswith("#"):
            break
        if inside and _ROW.match(line):
            rows.append(line)
    return rows


def remap_from(f, stock_i: int, new_i: int, new_index: Dict[int, int], stock_path: str):
    """A stock row's `from` (int or list) for its new position `new_i`: absolute stock indexes are mapped
    through `new_index`; a relative one stays relative while it still points at the same layer."""
    if isinstance(f, list):
        return [remap_from(x, stock_i, new_i, new_index, stock_path) for x in f]
    target = stock_i + f if f < 0 else f
    if target not in new_index:
        raise RecipeError(f"{stock_path}: layer {stock_i} reads stock layer {target}, which has no place in the new model")
    j = new_index[target]
    return f if f < 0 and new_i + f == j else j


def render(ctx: Context, stock_text: str, stock_path: str) -> str:
    spec = ARCHS[ctx.arch]
    d = yaml.safe_load(stock_text)
    bb_rows, head_rows = _rows(stock_text, "backbone"), _rows(stock_text, "head")
    if len(d.get("backbone", [])) != spec.backbone_len or len(bb_rows) != spec.backbone_len or len(head_rows) != len(d.get("head", [])):
        raise RecipeError(
            f"{stock_path} does not have the stock layout ({spec.backbone_len} one-line backbone rows); "
            "was it edited? restore it"
        )
    tail = bb_rows[spec.backbone_len - spec.keep_tail :]
    new_index: Dict[int, int] = dict(spec.slots)  # stock row -> stored index in the new model
    for k in range(spec.keep_tail):
        new_index[spec.backbone_len - spec.keep_tail + k] = 5 + k
    first_head = 5 + spec.keep_tail
    for k in range(len(head_rows)):
        new_index[spec.backbone_len + k] = first_head + k

    def remap(f, stock_i: int, new_i: int):
        return remap_from(f, stock_i, new_i, new_index, stock_path)

    out = [
        f"{MARK} {ctx.arch} with the {ctx.backbone.id} backbone, generated from {stock_path.rsplit('/', 1)[-1]}.",
        f"{MARK} The backbone is layer 0 and fills slots 0-4 (slot 0 empty, strides 4/8/16/32 in 1-4);",
        f"{MARK} later layers are numbered i + 4, as the patched parse_model stores them.",
        "",
        f"nc: {ctx.nc} # number of classes",
    ]
    for key, value in d.items():
        if key in ("nc", "backbone", "head"):
            continue
        if isinstance(value, dict):
            out.append(f"{key}:")
            out += [f"  {k}: {flow(v)}" for k, v in value.items()]
        else:
            out.append(f"{key}: {flow(value)}")
    out += ["", "backbone:", "  # [from, repeats, module, args]",
            f"  - [-1, 1, {ctx.backbone.cls}, []] # 0-4: feature maps of strides 4, 8, 16, 32 in slots 1-4"]
    rows = [(spec.backbone_len - spec.keep_tail + k, line) for k, line in enumerate(tail)]
    rows += [(spec.backbone_len + k, line) for k, line in enumerate(head_rows)]
    light = ctx.arch == "rtdetr" and ctx.head == "light"
    for n_row, (stock_i, line) in enumerate(rows):
        new_i = new_index[stock_i]
        if n_row == spec.keep_tail:
            out += ["", "head:"]
        indent, inner, _ = _ROW.match(line).groups()
        first, rest = _split_first(inner)
        row = (d["backbone"] + d["head"])[stock_i]
        if light and row[2] == "RepC3":
            rest = f"{row[1]}, RepC3, {flow([row[3][0], 0.5])}"
        elif light and row[2] == "RTDETRDecoder":
            rest = f"{row[1]}, RTDETRDecoder, [nc, 256, 300, 4, 8, 3]"
        out.append(f"{indent}- [{flow(remap(row[0], stock_i, new_i))}, {rest}] # {new_i}")
    return "\n".join(out) + "\n"


class ModelYaml(Recipe):
    name = "model_yaml"
    step = "write the model yaml: the backbone at layer 0, the stock head re-indexed for five slots"

    def targets(self, ctx: Context) -> List[str]:
        p = plan(ctx)
        return [p.stock, p.out]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        p = plan(ctx)
        stock = sources.get(p.stock)
        if stock is None:
            raise RecipeError(f"cannot read the stock yaml {p.stock}")
        text = render(ctx, stock, p.stock)
        have = sources.get(p.out)
        if have == text:
            return Outcome(ALREADY, p.out)
        if have is not None:
            raise RecipeError(
                f"{p.out} already exists with other content (yours, or from another --nc/--head); "
                "rename or delete it, then apply again"
            )
        return Outcome(APPLIED, p.out, {p.out: text})
