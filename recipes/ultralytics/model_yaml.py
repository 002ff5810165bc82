"""model_yaml — write the model yaml for the family and task with the backbone (tutorial step "write a model yaml").

Target (new file): next to the release's stock yaml of that family and task — `cfg/models/...` from 8.0.150,
`models/...` before, `yolo/v8/models/` in 8.0.0 — named `<stock stem>-<backbone id>.yaml`: `yolov8-<id>.yaml`,
`yolo11-pose-<id>.yaml`, `yolo26-seg-<id>.yaml`, `yolo12-cls-<id>.yaml`, `rtdetr-l-<id>.yaml`, `rtdetr-x-<id>.yaml`
(`yolov8n-seg-<id>.yaml` before 8.0.55, whose per-scale yamls carry depth/width multiples). The families, tasks
and the releases they arrived in are in `families.py`; an arch or task the checkout lacks is refused.

The head is the release's own stock head of that family and task, read from its stock yaml (so it is exactly
what that release builds: YOLO26's Segment26/Pose26/OBB26 with end2end and reg_max 1, YOLO12's A2C2f neck, ...),
re-indexed for the 5-slot backbone (SPEC §3): the backbone is layer 0 and fills slots 0-4, so a stock reference
to the last row of the stride 8/16/32 stage becomes 2/3/4 (the stages are found from the rows' strides, not
from their positions), and every later layer moves to its new position + 4. Relative references that still
point at the same layer stay relative. The stock rows after the stride-32 stage that are not a stage (SPPF,
C2PSA) stay for every task but classify, where the stride-32 map goes straight into `Classify` (why, per
family: `families.py`). The other top-level keys (scales, end2end, reg_max, kpt_shape, ...) are copied.

RT-DETR `--scale x` takes the rtdetr-x neck, anything else rtdetr-l. `--head light` is the MobileNetV4
tutorial's lighter rtdetr-l variant: RepC3 with e = 0.5 and `RTDETRDecoder [nc, 256, 300, 4, 8, 3]` (the repc3
step makes e = 0.5 build before 8.3.38).

Already applied: the file exists with exactly the text this recipe would write.
Refused: a file of that name exists with other content (never overwritten silently).

VALID (yolo26 segment, mobilenetv4_small): `[-1, 1, MobileNetV4ConvSmall, []]` at 0, SPPF at 5 and C2PSA at 6
(`[-1, 2, C2PSA, [1024]]`), the stock neck from 7, `[[-1, 3], 1, Concat, [1]]` at 8 where the stock read row 6,
and `[[12, 15, 18], 1, Segment26, [nc, 32, 256]]` last. yolo11 classify: the backbone, then
`[-1, 1, Classify, [nc]] # 5`. INVALID: a stock yaml edited so a head row reads a backbone row inside a stage
(not a stage's last row): refused, naming the row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import yaml

from .. import ALREADY, APPLIED, Context, Outcome, Recipe, RecipeError
from ..backbone_stages import last_row_per_stride
from ..build_plan import BuildPlan, PlanError
from ..cst_anchors import MARK
from ..families import FAMILIES, POST_STAGE, RTDETR_SCALES, SUFFIX, TASKS, model_class, rtdetr_scale

LIGHT_OUT = "rtdetr-light-{id}.yaml"
SLOT = {4: 1, 8: 2, 16: 3, 32: 4}  # stride of a backbone map -> its slot

_ROW = re.compile(r"^(\s*)-\s*\[(.*)\]\s*(#.*)?$")


@dataclass
class YamlPlan:
    stock: str  # path of the stock yaml, relative to the checkout root
    out: str  # path of the generated yaml
    model: str  # the tasks.py class that builds it
    scaled: bool  # the yaml has `scales:` (the scale is passed as d["scale"]) rather than multiples
    scale: str  # the scale it is built at (rtdetr: l or x)
    task: str


def stock_names(arch: str, task: str, scale: str) -> List[str]:
    fam = FAMILIES[arch]
    s = rtdetr_scale(scale) if fam.rtdetr else scale
    return [stem.format(scale=s) + SUFFIX[task] + ".yaml" for stem in fam.stems]


def find_stock(checkout, arch: str, scale: str, task: str = "detect") -> Optional[str]:
    """Relative path of the stock yaml of `arch` and `task` in this checkout, or None when the release lacks it."""
    cfg = checkout.files.get("cfg_models")
    if not cfg:
        return None
    base = checkout.root / cfg
    for name in stock_names(arch, task, scale):
        hits = sorted(base.rglob(name))
        if hits:
            return checkout.rel(hits[0])
    return None


def plan(ctx: Context) -> YamlPlan:
    """Where the yaml comes from and goes; raises PlanError when the release cannot build the arch and task."""
    fam = FAMILIES[ctx.arch]
    co = ctx.checkout
    task = getattr(ctx, "task", "detect")
    if task not in TASKS:
        raise PlanError(f"unknown --task {task}; choose one of: {', '.join(TASKS)}", step="task")
    if task not in fam.tasks:
        raise PlanError(f"--arch {ctx.arch} has no {task} task; it has: {', '.join(fam.tasks)}", step="task")
    if fam.rtdetr and ctx.scale not in ("n",) + RTDETR_SCALES:
        raise PlanError(f"rtdetr comes as l and x; --scale {ctx.scale} has no rtdetr neck (use l or x)", step="scale")
    tasks_py = co.read(co.files["tasks"]) or ""
    if fam.rtdetr and "class RTDETRDetectionModel" not in tasks_py:
        raise PlanError(f"Ultralytics {co.version} has no RT-DETR (it arrived in {fam.since}); upgrade or use --arch yolov8")
    stock = find_stock(co, ctx.arch, ctx.scale, task)
    if stock is None:
        name = stock_names(ctx.arch, task, ctx.scale)[0]
        if task == "detect" or find_stock(co, ctx.arch, ctx.scale) is None:
            raise PlanError(f"Ultralytics {co.version} has no stock {name} (the arch arrived in {fam.since}); "
                            "upgrade the checkout or pick another --arch")
        raise PlanError(f"Ultralytics {co.version} has no stock {name} (the {ctx.arch} {task} task arrived in "
                        f"{fam.tasks[task]}); upgrade the checkout or pick another --task", step="task")
    model = model_class(ctx.arch, task)
    if f"class {model}(" not in tasks_py:
        raise PlanError(f"Ultralytics {co.version} has a stock {stock.rsplit('/', 1)[-1]} but no {model} in "
                        f"{co.files['tasks']}; upgrade the checkout", step="task")
    scaled = not re.search(r"\d[nslmx](-\w+)?\.yaml$", stock) or fam.rtdetr
    stem = stock.rsplit("/", 1)[-1][: -len(".yaml")]
    if fam.rtdetr:
        stem = f"rtdetr-{rtdetr_scale(ctx.scale)}"  # rt-detr-l.yaml of 8.0.111 too: one name for every release
    name = LIGHT_OUT.format(id=ctx.backbone.id) if (fam.rtdetr and ctx.head == "light") else f"{stem}-{ctx.backbone.id}.yaml"
    if fam.rtdetr and ctx.head == "light" and rtdetr_scale(ctx.scale) != "l":
        raise PlanError("--head light is the MobileNetV4 tutorial's rtdetr-l variant; use it without --scale x", step="head")
    out = stock.rsplit("/", 1)[0] + "/" + name
    scale = rtdetr_scale(ctx.scale) if fam.rtdetr else ctx.scale
    return YamlPlan(stock, out, model, scaled, scale, task)


def build_plan(ctx: Context) -> BuildPlan:
    """What verification builds (and training loads) for this context, as plain data."""
    p = plan(ctx)
    co = ctx.checkout
    fam = FAMILIES[ctx.arch]
    out_name = p.out.rsplit("/", 1)[-1]
    load = out_name
    if p.scaled and not fam.rtdetr:  # Ultralytics reads the scale from the file name: yolo26s-seg-<id>.yaml
        load = out_name.replace(ctx.arch, ctx.arch + p.scale, 1)
    return BuildPlan(p.stock, p.out, p.model, co.package.name, p.scaled, p.scale, p.task, "ultralytics", fam.trainer, load)


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


def row_stride(row) -> int:
    """Down-sampling of one stock backbone row: Conv-like rows carry the stride as args[2]; HGStem is /4."""
    _, _, module, args = row
    if module == "HGStem":
        return 4
    if module in ("Conv", "DWConv", "GhostConv", "RepConv") and len(args) > 2 and isinstance(args[2], int):
        return args[2]
    return 1


def stages(backbone: List, path: str) -> Tuple[Dict[int, int], List[int]]:
    """({stock row: slot} for the last row of the stride 8/16/32 stages, [trailing non-stage rows: SPPF, C2PSA])."""
    last, tail = last_row_per_stride(backbone, POST_STAGE, row_stride)
    if not all(s in last for s in (8, 16, 32)) or max(last) != 32:
        raise RecipeError(f"{path}: cannot find the stride 8/16/32 stages of the stock backbone (strides seen: "
                          f"{sorted(last)}); was it edited? restore it")
    return {k: SLOT[s] for s, k in last.items() if s in SLOT}, tail


def render(ctx: Context, stock_text: str, stock_path: str) -> str:
    task = getattr(ctx, "task", "detect")
    d = yaml.safe_load(stock_text)
    bb_rows, head_rows = _rows(stock_text, "backbone"), _rows(stock_text, "head")
    ok = isinstance(d, dict) and isinstance(d.get("backbone"), list) and isinstance(d.get("head"), list)
    if not ok or len(bb_rows) != len(d["backbone"]) or len(head_rows) != len(d["head"]):
        raise RecipeError(f"{stock_path} does not have the stock layout (one-line backbone and head rows); was it edited? restore it")
    nb = len(d["backbone"])
    new_index, tail = stages(d["backbone"], stock_path)  # stock row -> stored index in the new model
    if task == "classify":  # the stride-32 map goes straight into Classify (families.py says why)
        new_index.update({stock_i: SLOT[32] for stock_i in tail})
        tail = []
    for k, stock_i in enumerate(tail):
        new_index[stock_i] = 5 + k
    first_head = 5 + len(tail)
    for k in range(len(head_rows)):
        new_index[nb + k] = first_head + k

    def remap(f, stock_i: int, new_i: int):
        return remap_from(f, stock_i, new_i, new_index, stock_path)

    what = ctx.arch if task == "detect" else f"{ctx.arch} {task}"
    out = [
        f"{MARK} {what} with the {ctx.backbone.id} backbone, generated from {stock_path.rsplit('/', 1)[-1]}.",
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
    rows = [(stock_i, bb_rows[stock_i]) for stock_i in tail]
    rows += [(nb + k, line) for k, line in enumerate(head_rows)]
    light = ctx.arch == "rtdetr" and ctx.head == "light"
    for n_row, (stock_i, line) in enumerate(rows):
        new_i = new_index[stock_i]
        if n_row == len(tail):
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
