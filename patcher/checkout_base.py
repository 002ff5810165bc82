"""The `Checkout` record every detector returns (Ultralytics: checkout.py, YOLOv5: yolov5_checkout.py).

Kept apart so the two detectors share it without importing each other; `checkout.detect` dispatches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

VERSION_LINE = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


@dataclass
class Checkout:
    kind: str  # "ultralytics" or "yolov5"
    root: Path  # the folder that holds the package (what goes first on sys.path); the journal lives here
    package: Path  # the importable package folder (`ultralytics/`, or the yolov5 root / `yolov5/`)
    version: str
    layout: str  # ultralytics: "wheel-8.0.0" / "pre-8.0.150" / "current"; yolov5: "git" / "pypi"
    files: Dict[str, Optional[str]] = field(default_factory=dict)  # role -> path relative to root (posix)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix()

    @property
    def version_tuple(self) -> Tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.version)[:3])

    def read(self, rel: Optional[str]) -> Optional[str]:
        if rel is None:
            return None
        p = self.root / rel
        return p.read_text(encoding="utf-8") if p.is_file() else None

def first_file(root: Path, *candidates: str) -> Optional[str]:
    for c in candidates:
        if (root / c).is_file():
            return c
    return None
