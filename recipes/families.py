"""The model families and tasks mbpatch writes yaml files for (data only; used by model_yaml and the CLI).

Facts read from the released wheels (`pip download --no-deps ultralytics==V`, then the stock yaml files):

| family | stock yamls (cfg/models/...) | first release | tasks, with the first release of each |
|---|---|---|---|
| yolov8 | v8/yolov8{,-seg,-pose,-obb,-cls}.yaml (per-scale yolov8n*.yaml before 8.0.55) | 8.0.0 | detect, segment, classify 8.0.0; pose 8.0.66; obb 8.0.235 |
| yolo11 | 11/yolo11{,-seg,-pose,-obb,-cls}.yaml | 8.3.0 | all five in 8.3.0 |
| yolo12 | 12/yolo12{,-seg,-pose,-obb,-cls}.yaml | 8.3.78 | all five in 8.3.78 |
| yolo26 | 26/yolo26{,-seg,-pose,-obb,-cls,-sem,-depth}.yaml | 8.4.0 | five in 8.4.0; semantic 8.4.52; depth 8.4.104 |
| rtdetr | rt-detr/rtdetr-{l,x}.yaml (rt-detr-{l,x}.yaml in 8.0.111) | 8.0.111 | detect |

Which stock layers after the stride-32 stage stay (`POST_STAGE`): every family's backbone ends with its
stride-32 stage (the Conv to stride 32 and the block after it), which mbpatch's backbone replaces. What follows
is not part of a stage, it is context for the neck:

- yolov8 keeps SPPF: the neck's only large-receptive-field block, at stride 32 (the tutorials keep it).
- yolo11 and yolo26 keep SPPF and C2PSA: SPPF as above, C2PSA the position-sensitive attention on the
  stride-32 map that their necks were designed around (YOLO26 writes SPPF with its own n=3, shortcut args,
  copied from the checkout's yaml as they are).
- yolo12 keeps nothing: it has neither; its stride-32 stage ends with A2C2f (area attention), which belongs to
  the stage and goes with it. Its A2C2f neck stays exactly as the release writes it.
- rtdetr keeps nothing: HGNetv2's last row is the stride-32 HGBlock stage; AIFI is already in the head.
- classify (every family) keeps nothing: the backbone's stride-32 map goes straight into the stock `Classify`
  (1x1 conv to 1280, global pool, linear), the way an ImageNet backbone feeds its classifier. SPPF's pooling
  pyramid adds nothing before a global pool, and the stock -cls yamls already drop SPPF (11/26 keep C2PSA,
  which was tuned for their own C3k2 features).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Tuple

TASKS = ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")
SUFFIX = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls",
          "semantic": "-sem", "depth": "-depth"}
# the tasks.py class that builds each task (the one YOLO.task_map names)
MODEL = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel",
         "classify": "ClassificationModel", "semantic": "SemanticSegmentationModel", "depth": "DepthModel"}
# trailing stock backbone rows that are not a stage (see the docstring); kept for every task but classify
POST_STAGE = frozenset({"SPPF", "SPP", "SPPELAN", "C2PSA", "C2fPSA", "PSA"})


@dataclass(frozen=True)
class Family:
    arch: str
    stems: Tuple[str, ...]  # stock yaml stems to look for, first found wins ({scale} is filled in)
    since: str  # first release that has the family
    tasks: Dict[str, str]  # task -> first release with its stock yaml
    keep: Tuple[str, ...]  # POST_STAGE modules this family's stock backbone has (documentation, checked)
    trainer: str = "YOLO"  # the ultralytics class that trains it
    rtdetr: bool = False


FAMILIES: Dict[str, Family] = {
    "yolov8": Family("yolov8", ("yolov8", "yolov8{scale}"), "8.0.0",
                     {"detect": "8.0.0", "segment": "8.0.0", "classify": "8.0.0", "pose": "8.0.66", "obb": "8.0.235"},
                     ("SPPF",)),
    "yolo11": Family("yolo11", ("yolo11",), "8.3.0", {t: "8.3.0" for t in TASKS[:5]}, ("SPPF", "C2PSA")),
    "yolo12": Family("yolo12", ("yolo12",), "8.3.78", {t: "8.3.78" for t in TASKS[:5]}, ()),
    "yolo26": Family("yolo26", ("yolo26",), "8.4.0",
                     {**{t: "8.4.0" for t in TASKS[:5]}, "semantic": "8.4.52", "depth": "8.4.104"}, ("SPPF", "C2PSA")),
    "rtdetr": Family("rtdetr", ("rtdetr-{scale}", "rt-detr-{scale}"), "8.0.111", {"detect": "8.0.111"}, (),
                     trainer="RTDETR", rtdetr=True),
}
ARCHS = tuple(FAMILIES)
RTDETR_SCALES = ("l", "x")


def rtdetr_scale(scale: str) -> str:
    """rtdetr comes as l and x: --scale x picks rtdetr-x, the default n (and l) rtdetr-l."""
    return "x" if scale == "x" else "l"


def model_class(arch: str, task: str) -> str:
    return "RTDETRDetectionModel" if FAMILIES[arch].rtdetr else MODEL[task]


def tasks_of(arch: str) -> Tuple[str, ...]:
    return tuple(FAMILIES[arch].tasks)


_HEAD_TASK = (("Classify", "classify"), ("SemanticSegment", "semantic"), ("Segment", "segment"), ("Pose", "pose"),
              ("OBB", "obb"), ("Depth", "depth"))


def arch_and_task_of(d, name: str = "", kind: str = "ultralytics") -> Tuple[str, str]:
    """(arch, task) of a model yaml (its parsed dict and file name): the task from its last head module, as
    Ultralytics guesses it; the family from the file name (yolov8/yolo11/yolo12/yolo26...), else from its modules."""
    rows = []
    if isinstance(d, dict):
        rows = [r for r in (d.get("backbone") or []) + (d.get("head") or []) if isinstance(r, list) and len(r) > 2]
    modules = [str(r[2]) for r in rows]
    last = modules[-1] if modules else ""
    task = next((t for key, t in _HEAD_TASK if last.startswith(key)), "detect")
    if kind == "yolov5":
        return "yolov5", task
    if "RTDETRDecoder" in modules:
        return "rtdetr", task
    m = re.match(r"yolo(v8|11|12|26)", name)
    if m:
        return ("yolov8" if m.group(1) == "v8" else "yolo" + m.group(1)), task
    if "A2C2f" in modules:
        return "yolo12", task
    if (isinstance(d, dict) and d.get("end2end")) or last.endswith("26"):
        return "yolo26", task
    return ("yolo11" if "C2PSA" in modules or "C3k2" in modules else "yolov8"), task
