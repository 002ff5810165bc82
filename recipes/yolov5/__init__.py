"""The YOLOv5 recipes (SPEC §4)."""

RECIPES = []
ARCHS = ("yolov5",)
