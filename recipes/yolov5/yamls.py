"""Reading YOLOv5's stock model yaml and writing ours in the same flow style.

Facts (ref/yolov5-versions.md, item 7): every `models/yolov5{n,s,m,l,x}.yaml` of every version has
`nc`, `depth_multiple`, `width_multiple`, three anchor rows, a 10-row backbone (Conv/C3 stages down to
stride 32, then SPPF) and a 15-row head that reads backbone rows 4 (P3/8), 6 (P4/16) and, through head
row 10, row 9 (SPPF). Master formats the file differently (flow lists spread over lines, double quotes),
so the stock file is read for its values with PyYAML, never for its text.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Sequence, Tuple

import yaml

from .. import RecipeError
from ..backbone_stages import last_row_per_stride
from ..ultralytics.model_yaml import remap_from

Row = list  # [from, number, module, args]

# parse_model's channel-scaled module set (the `c1, c2 = ch[f], args[0]` branch): args[0] is an out-channel count
CHANNEL_SCALED = {
    "Conv", "GhostConv", "Bottleneck", "GhostBottleneck", "SPP", "SPPF", "DWConv", "MixConv2d", "Focus",
    "CrossConv", "BottleneckCSP", "C3", "C3TR", "C3SPP", "C3Ghost", "nn.ConvTranspose2d", "DWConvTranspose2d", "C3x",
}
TAIL = ("SPPF", "SPP")  # stock backbone rows kept after a new backbone


def load_stock(text: str, path: str) -> Dict:
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid yaml ({e}); restore it") from None
    ok = isinstance(d, dict) and all(isinstance(d.get(k), list) for k in ("backbone", "head"))
    ok = ok and all(isinstance(r, list) and len(r) == 4 for r in d["backbone"] + d["head"])
    if not ok or "nc" not in d:
        raise RecipeError(f"{path} does not have the stock layout (nc, backbone and head rows); was it edited? restore it")
    return d


def row_stride(row: Row) -> int:
    """Down-sampling of one stock backbone row: Conv/Focus-like rows carry the stride as args[2]."""
    _, _, module, args = row
    if module in ("Conv", "GhostConv", "DWConv") and len(args) > 2 and isinstance(args[2], int):
        return args[2]
    if module == "Focus":
        return 2
    return 1


def backbone_outputs(backbone: Sequence[Row], path: str) -> Tuple[Dict[int, int], List[int]]:
    """({stride: last stock row at that stride}, [stock rows of the tail (SPPF)]) of a stock backbone."""
    last, tail = last_row_per_stride(backbone, TAIL, row_stride)
    if not all(s in last for s in (8, 16, 32)):
        raise RecipeError(f"{path}: cannot find the stride 8/16/32 stages of the stock backbone; restore the file")
    return last, tail


def reindex(d: Dict, path: str, new_for_stride: Dict[int, int], tail_at: int) -> Tuple[List[Tuple[int, Row]], List[Tuple[int, Row]]]:
    """(tail, head): the stock tail (SPPF) and head rows with their new indices and `from` fields re-pointed.

    `new_for_stride` gives the new index that holds the map of each stride; the tail starts at `tail_at`
    and the head follows it. A relative `from` stays relative when it still names the same layer.
    """
    last, tail = backbone_outputs(d["backbone"], path)
    new_index = {k: new_for_stride[s] for s, k in last.items() if s in new_for_stride}
    for j, k in enumerate(tail):
        new_index[k] = tail_at + j
    first_head = tail_at + len(tail)
    nb = len(d["backbone"])
    for j in range(len(d["head"])):
        new_index[nb + j] = first_head + j

    def remap(f, stock_i: int, new_i: int):
        return remap_from(f, stock_i, new_i, new_index, path)

    def moved(stock_i: int) -> Tuple[int, Row]:
        f, n, module, args = (d["backbone"] + d["head"])[stock_i]
        new_i = new_index[stock_i]
        return new_i, [remap(f, stock_i, new_i), n, module, list(args)]

    return [moved(k) for k in tail], [moved(nb + j) for j in range(len(d["head"]))]


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def fold(row: Row, gd: float, gw: float) -> Row:
    """The row with the depth and width multiples applied to its numbers (as parse_model would)."""
    f, n, module, args = row
    n = max(round(n * gd), 1) if n > 1 else n
    if module in CHANNEL_SCALED and args and isinstance(args[0], (int, float)):
        args = [make_divisible(args[0] * gw, 8)] + list(args[1:])
    return [f, n, module, args]


# --- writing ------------------------------------------------------------------------------------------------

_BARE = {"None", "nc", "anchors"}


def flow(v) -> str:
    """A yaml flow value as YOLOv5's yaml files write them: names the parser evaluates bare, strings quoted."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return "None"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {flow(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if s in _BARE or re.fullmatch(r"(nn\.)?[A-Z]\w*", s):
        return s
    return "'" + s.replace("'", "''") + "'"


def row_text(row: Row) -> str:
    f, n, module, args = row
    return f"[{flow(f)}, {n}, {module}, {flow(args)}]"


def section(name: str, rows: Sequence[Tuple[str, str]]) -> List[str]:
    """`name:` then the rows as one flow list, one row a line, each with its comment."""
    out = [f"{name}:", "  # [from, number, module, args]"]
    for k, (text, comment) in enumerate(rows):
        lead = "  [" if k == 0 else "   "
        out.append(f"{lead}{text},  # {comment}")
    out.append("  ]")
    return out


def parameters(d: Dict, nc: int, depth: float, width: float) -> List[str]:
    out = [
        "# Parameters",
        f"nc: {nc}  # number of classes",
        f"depth_multiple: {depth}  # model depth multiple",
        f"width_multiple: {width}  # layer channel multiple",
    ]
    anchors = d.get("anchors", 3)
    if isinstance(anchors, list):
        out.append("anchors:")
        for k, a in enumerate(anchors):
            label = f"  # P{k + 3}/{2 ** (k + 3)}" if len(anchors) == 3 else ""
            out.append(f"  - {flow(a)}{label}")
    else:
        out.append(f"anchors: {flow(anchors)}")
    for key, value in d.items():
        if key not in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head"):
            out.append(f"{key}: {flow(value)}")
    return out
