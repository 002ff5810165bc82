"""Small generated datasets for one-epoch training checks, one per task, in the YOLO label formats.

Runs inside the interpreter that trains (`--python`), which may not have mbpatch installed: standard
library, numpy and Pillow only (both Ultralytics and YOLOv5 require them). Nothing is downloaded.

Each image is a noisy background with one to three objects of two classes: class 0 a filled rectangle,
class 1 a filled ellipse, each in its own random colour. The labels are exact because the shapes are drawn
from them:

  detect    images/{train,val}/*.png, labels/{train,val}/*.txt    `c cx cy w h` (normalised)
  segment   the same folders                                       `c x1 y1 x2 y2 ...` (the outline polygon)
  pose      the same folders, data yaml with `kpt_shape: [4, 3]`    `c cx cy w h` + 4 x `x y 2` (the box
            corners tl, tr, br, bl; `flip_idx: [1, 0, 3, 2]` swaps them for a left-right flip)
  obb       the same folders                                       `c x1 y1 ... x4 y4` (a rotated rectangle;
            class 1 is a rotated rectangle too, drawn as a filled 4-gon)
  classify  {train,val}/<class name>/*.png, one centred object per image; "data" is the folder itself

The data yaml is written as JSON, which every YAML loader reads, so the generator needs no yaml library.

    python datasets.py TASK FOLDER      # writes the dataset, prints the path to pass as `data=`
"""

from __future__ import annotations

import json
import math
import os
import sys

TASKS = ("detect", "segment", "pose", "obb", "classify")
NAMES = ["rectangle", "ellipse"]


def _background(rng, size):
    import numpy as np

    base = rng.integers(40, 200, size=3)
    noise = rng.integers(-30, 31, size=(size, size, 3))
    return np.clip(base[None, None, :] + noise, 0, 255).astype("uint8")


def _colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _objects(rng, size, count):
    """(class, cx, cy, w, h, angle) in pixels; angle in radians, 0 except for obb."""
    out = []
    for _ in range(count):
        w, h = rng.uniform(0.2, 0.45, size=2) * size
        cx = rng.uniform(w / 2 + 1, size - w / 2 - 1)
        cy = rng.uniform(h / 2 + 1, size - h / 2 - 1)
        out.append((int(rng.integers(0, 2)), cx, cy, w, h))
    return out


def _corners(cx, cy, w, h, angle):
    c, s = math.cos(angle), math.sin(angle)
    pts = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):  # tl, tr, br, bl
        pts.append((cx + dx * c - dy * s, cy + dx * s + dy * c))
    return pts


def _ellipse(cx, cy, w, h, n=16):
    return [(cx + w / 2 * math.cos(2 * math.pi * k / n), cy + h / 2 * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _clip(v, size):
    return min(max(v / size, 0.0), 1.0)


def _line(values):
    return " ".join(f"{v:.6f}" if isinstance(v, float) else str(v) for v in values)


def _image(task, rng, size):
    """One image and its label lines for a detection-style task."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(img)
    lines = []
    for cls, cx, cy, w, h in _objects(rng, size, int(rng.integers(1, 4))):
        if task == "obb":
            # a rotated rectangle keeps inside the image: shrink it to fit its rotated extent
            angle = float(rng.uniform(0, math.pi / 2))
            pts = _corners(cx, cy, w * 0.7, h * 0.7, angle)
            draw.polygon(pts, fill=_colour(rng))
            lines.append(_line([cls] + [_clip(v, size) for p in pts for v in p]))
            continue
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        outline = _corners(cx, cy, w, h, 0.0) if cls == 0 else _ellipse(cx, cy, w, h)
        if cls == 0:
            draw.rectangle(box, fill=_colour(rng))
        else:
            draw.ellipse(box, fill=_colour(rng))
        xywh = [cx / size, cy / size, w / size, h / size]
        if task == "segment":
            lines.append(_line([cls] + [_clip(v, size) for p in outline for v in p]))
        elif task == "pose":
            kpts = []
            for x, y in _corners(cx, cy, w, h, 0.0):
                kpts += [_clip(x, size), _clip(y, size), 2]
            lines.append(_line([cls] + xywh + kpts))
        else:
            lines.append(_line([cls] + xywh))
    return img, lines


def _classify(folder, rng, size, n_train, n_val):
    from PIL import Image, ImageDraw

    for split, n in (("train", n_train), ("val", n_val)):
        for cls, name in enumerate(NAMES):
            d = os.path.join(folder, split, name)
            os.makedirs(d, exist_ok=True)
            for k in range(max(n // len(NAMES), 2)):
                img = Image.fromarray(_background(rng, size))
                w, h = rng.uniform(0.4, 0.8, size=2) * size
                box = [(size - w) / 2, (size - h) / 2, (size + w) / 2, (size + h) / 2]
                (ImageDraw.Draw(img).rectangle if cls == 0 else ImageDraw.Draw(img).ellipse)(box, fill=_colour(rng))
                img.save(os.path.join(d, f"{k:04d}.png"))
    return folder


def make(task: str, folder: str, n_train: int = 32, n_val: int = 8, size: int = 96, seed: int = 0) -> str:
    """Write a dataset of `task` under `folder`; return what to pass as `data=` (a yaml file or a folder)."""
    import numpy as np

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    folder = os.path.abspath(folder)
    if task == "classify":
        return _classify(folder, rng, size, n_train, n_val)
    for split, n in (("train", n_train), ("val", n_val)):
        images, labels = os.path.join(folder, "images", split), os.path.join(folder, "labels", split)
        os.makedirs(images, exist_ok=True)
        os.makedirs(labels, exist_ok=True)
        for k in range(n):
            img, lines = _image(task, rng, size)
            img.save(os.path.join(images, f"{k:04d}.png"))
            with open(os.path.join(labels, f"{k:04d}.txt"), "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
    data = {"path": folder, "train": "images/train", "val": "images/val", "nc": len(NAMES), "names": NAMES}
    if task == "pose":
        data["kpt_shape"] = [4, 3]
        data["flip_idx"] = [1, 0, 3, 2]
    path = os.path.join(folder, "data.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    return path


if __name__ == "__main__":
    print(make(sys.argv[1], sys.argv[2]))
