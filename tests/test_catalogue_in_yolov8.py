"""Every backbone of the catalogue inside YOLOv8 (scale n) on 8.4.190: built, run at four sizes and in train mode, reverted.

What is built and checked is in tests/catalogue_build.py (shared with the other detector's file).
"""

import pytest

from catalogue_build import every_backbone_builds


@pytest.mark.slow
def test_every_backbone_builds_in_yolov8(ultralytics_checkout):
    every_backbone_builds(ultralytics_checkout, "yolov8")
