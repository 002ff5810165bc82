"""Detection of YOLOv5 checkouts (git clone layout and the PyPI `yolov5` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def detect(path: Path) -> Optional["object"]:
    """Return a Checkout for a YOLOv5 checkout at `path`, or None."""
    return None
