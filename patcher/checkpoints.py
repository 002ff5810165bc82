"""Trained checkpoints that need the patch: what `revert` warns about before the backbone's source goes away.

Ultralytics and YOLOv5 save the whole model object in `best.pt` / `last.pt` (pickle), so a checkpoint trained
on a patched checkout names the backbone's module (`ultralytics.nn.AddModules.mobilenetv4`,
`models.repvit`, ...). Once revert deletes that file, `torch.load` of those checkpoints fails with
"No module named ...": the user's training run looks lost. Nothing is lost (apply the same backbone again
and they load; an exported ONNX file never needed the source), but revert must say so before and after.

Read without torch: a torch checkpoint is a zip whose `*/data.pkl` member holds the object graph (no tensor
data), where protocol-2 pickles spell each class as `<module>\\n<name>\\n`. Only `runs/` folders are searched
(where both trainers write by default), at most MAX_FILES files, so revert stays fast.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Iterable, List

MAX_FILES = 500
RUNS = "runs"


def module_names(deleted: Iterable[str]) -> List[str]:
    """Dotted module names of the deleted Python files, as a pickle names them from its last two parts
    (`ultralytics/nn/AddModules/mobilenetv4.py` -> `AddModules.mobilenetv4`; `models/repvit.py` ->
    `models.repvit`), which also matches the longer names (`yolov5.models.repvit`)."""
    out = []
    for rel in deleted:
        parts = Path(rel).with_suffix("").parts
        if rel.endswith(".py") and len(parts) >= 2 and parts[-1] != "__init__":
            out.append(".".join(parts[-2:]))
    return sorted(set(out))


def pickled(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as z:
            return b"".join(z.read(n) for n in z.namelist() if n.endswith("data.pkl"))
    except (zipfile.BadZipFile, OSError, KeyError):
        return b""  # an old (non-zip) torch file or not a checkpoint: not judged


def needing(roots: Iterable[Path], deleted: Iterable[str]) -> List[Path]:
    """Checkpoints (`*.pt` under each root's runs/ folder) whose pickled model names a deleted module."""
    names = module_names(deleted)
    if not names:
        return []
    pattern = re.compile(rb"(?<![A-Za-z0-9_])(?:[A-Za-z0-9_]+\.)*(?:" + b"|".join(re.escape(n.encode()) for n in names)
                         + rb")(?![A-Za-z0-9_.])")
    found, seen = [], 0
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        runs = root / RUNS
        if not runs.is_dir():
            continue
        for folder, _, files in os.walk(runs):
            for name in sorted(files):
                if not name.endswith(".pt"):
                    continue
                seen += 1
                if seen > MAX_FILES:
                    return found
                path = Path(folder) / name
                if pattern.search(pickled(path)):
                    found.append(path)
    return found
