"""What a checkout builds for a Context: a plain description the engine side turns into its verification target.

The recipes know where the stock yaml of a family and task lives and where theirs goes; they do not know how
verification runs. `BuildPlan` is that knowledge as data (paths relative to the checkout root), and
`PlanError` a refusal with the command-line step it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import RecipeError


class PlanError(RecipeError):
    """The checkout cannot build what was asked (an arch, task, scale or style it lacks)."""

    def __init__(self, msg: str, step: str = "arch"):
        super().__init__(msg)
        self.step = step


@dataclass(frozen=True)
class BuildPlan:
    stock: str  # the stock yaml of the same family, task and scale (relative to the checkout root)
    out: str  # the yaml mbpatch writes
    model: str  # the class that builds both (tasks.py / models/yolo.py)
    package: str  # where that class lives: "ultralytics" (its nn.tasks), or YOLOv5's "models" / "yolov5.models"
    scaled: bool  # the yaml has `scales:` (the scale is passed as d["scale"]) rather than multiples
    scale: str  # the scale both are built at
    task: str  # detect, segment, pose, obb, classify, semantic, depth: the name the trainer uses
    kind: str = "ultralytics"  # or "yolov5"
    trainer: str = "YOLO"  # Ultralytics: the class that trains it (YOLO or RTDETR); YOLOv5: its train script
    load_name: str = ""  # the file name to load for this scale (Ultralytics reads the scale from the name)
