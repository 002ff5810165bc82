"""Benchmark: does the patched detector learn? From-scratch training on a generated, seeded dataset.

For each family (yolov8, yolo11, yolo26 at scale n) and each backbone (stock, then the catalogue), a fresh
copy of the Ultralytics checkout is patched with `mbpatch apply --no-verify` and trained from random weights with
the same settings (seed 0, deterministic, CPU, the same epochs); the row is the final validation mAP50-95 and
mAP50 and the wall time of the training run. The dataset is harder than `verify --train`'s 16 images: more
images, several classes of shapes, small objects (3-12 % of the image side by default), 1-6 per image.

A generated dataset ranks wiring and capacity (can gradients reach every layer, does the neck get enough
channels), NOT ImageNet transfer: pretrained backbones are not used here.

    python benchmarks/learn.py [--families yolov8 yolo11 yolo26] [--backbones stock repvit_m1 ...]
        [--epochs 30] [--train 256] [--val 64] [--imgsz 160] [--classes 4] [--batch 16]
        [--release 8.4.190] [--out benchmarks/RESULTS-learn.md]

Not a test. Each row runs in its own process (YOLO_CONFIG_DIR of its own). Results are appended, newest first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MBPATCH_CACHE", Path.home() / ".cache" / "mbpatch"))
FOLDERS = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}
SHAPES = ("rectangle", "ellipse", "triangle", "cross")


def make_dataset(folder: Path, n_train: int, n_val: int, size: int, classes: int, seed: int = 0,
                 obj=(0.03, 0.12)) -> Path:
    """Noisy backgrounds with 1-6 filled shapes of `classes` kinds, sides `obj` of the image; labels are the boxes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            base = rng.integers(40, 200, size=3)
            pixels = np.clip(base + rng.integers(-40, 41, size=(size, size, 3)), 0, 255).astype("uint8")
            img = Image.fromarray(pixels)
            draw = ImageDraw.Draw(img)
            lines = []
            for _ in range(int(rng.integers(1, 7))):
                c = int(rng.integers(0, classes))
                w, h = (float(v) for v in rng.uniform(obj[0], obj[1], size=2) * size)
                cx, cy = (float(v) for v in rng.uniform(0.08, 0.92, size=2) * size)
                x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
                colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
                if SHAPES[c] == "rectangle":
                    draw.rectangle([x0, y0, x1, y1], fill=colour)
                elif SHAPES[c] == "ellipse":
                    draw.ellipse([x0, y0, x1, y1], fill=colour)
                elif SHAPES[c] == "triangle":
                    draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
                else:  # a plus sign filling its box
                    draw.rectangle([x0, cy - h / 6, x1, cy + h / 6], fill=colour)
                    draw.rectangle([cx - w / 6, y0, cx + w / 6, y1], fill=colour)
                lines.append(f"{c} {cx / size:.6f} {cy / size:.6f} {w / size:.6f} {h / size:.6f}")
            img.save(folder / "images" / split / f"{k:05d}.png")
            (folder / "labels" / split / f"{k:05d}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(folder), "train": "images/train", "val": "images/val", "nc": classes,
            "names": list(SHAPES[:classes])}
    path = folder / "data.yaml"
    path.write_text(json.dumps(data, indent=1))  # JSON is YAML
    return path


# One training run in a fresh interpreter with the checkout first on sys.path.
TRAIN = r"""
import json, sys, time
root, model_yaml, data, epochs, imgsz, batch, project = sys.argv[1:8]
sys.path.insert(0, root)
import torch
threads = torch.get_num_threads()
from ultralytics import YOLO
torch.set_num_threads(threads)  # Ultralytics sets cores - 1 at import (1 thread on 2 cores); as verify does
model = YOLO(model_yaml)
t0 = time.perf_counter()
model.train(data=data, epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), seed=0, deterministic=True, workers=0,
            device="cpu", plots=False, amp=False, project=project, name="run", exist_ok=True, verbose=False)
wall = time.perf_counter() - t0
params = sum(p.numel() for p in model.trainer.model.parameters())  # as trained: the dataset's nc
m = model.trainer.metrics
print("@@LEARN@@" + json.dumps({"map50_95": m.get("metrics/mAP50-95(B)"), "map50": m.get("metrics/mAP50(B)"),
                                "wall_s": wall, "params": params, "torch_threads": torch.get_num_threads()}))
"""


def checkout(release: str, dest: Path) -> Path:
    src = CACHE / "src" / f"ultralytics-{release}"
    if not (src / "ultralytics").is_dir():
        subprocess.run([sys.executable, "-m", "mbpatch", "fetch", f"ultralytics=={release}", str(dest)], check=True)
        return dest
    shutil.copytree(src, dest)
    return dest


def run_row(release, family, backbone, data, args, work: Path) -> dict:
    root = checkout(release, work / f"{family}-{backbone}" / "ultralytics")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(YOLO_CONFIG_DIR=str(work / "yolo-config" / f"{family}-{backbone}"), YOLO_OFFLINE="1")
    if backbone == "stock":
        model = f"{family}n.yaml"
    else:
        subprocess.run([sys.executable, "-m", "mbpatch", "apply", "--repo", str(root), "--backbone", backbone,
                        "--arch", family, "--nc", str(args.classes), "--no-verify", "--json"],
                       check=True, capture_output=True, env=env)
        model = f"{family}n-{backbone}.yaml"  # the bare name: the checkout finds it (see patcher/load_path.py)
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(root), model, str(data), str(args.epochs), str(args.imgsz),
                           str(args.batch), str(work / "runs" / f"{family}-{backbone}")],
                          capture_output=True, text=True, env=env, cwd=str(work))
    for line in proc.stdout.splitlines():
        if line.startswith("@@LEARN@@"):
            return json.loads(line[len("@@LEARN@@"):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FOLDERS))
    ap.add_argument("--backbones", nargs="+", default=None, help="default: stock and every catalogue backbone")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--classes", type=int, default=4, choices=range(1, len(SHAPES) + 1))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--obj", type=float, nargs=2, default=(0.03, 0.12), help="object side range, fraction of the image")
    ap.add_argument("--release", default="8.4.190")
    ap.add_argument("--work", default=None, help="folder for checkouts, dataset and runs (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-learn.md"))
    args = ap.parse_args()
    if args.backbones is None:
        from mbpatch.templates import AVAILABLE, CATALOG

        args.backbones = ["stock"] + [b for b in CATALOG if b in AVAILABLE]
    work = Path(args.work or tempfile.mkdtemp(prefix="mbpatch-learn-"))
    data = make_dataset(work / "data", args.train, args.val, args.imgsz, args.classes, obj=tuple(args.obj))
    rows = []
    for family in args.families:
        for backbone in args.backbones:
            got = run_row(args.release, family, backbone, data, args, work)
            rows.append((family, backbone, got))
            print(family, backbone, json.dumps(got), flush=True)
    import torch

    head = (f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
            f"{os.cpu_count()} cores, torch {torch.__version__}, Ultralytics {args.release}\n\n"
            f"Configuration: {args.train} train / {args.val} val generated images, {args.classes} classes, "
            f"objects {args.obj[0]:g}-{args.obj[1]:g} of the side, imgsz {args.imgsz}, {args.epochs} epochs from scratch, "
            f"batch {args.batch}, seed 0, CPU.\n\n"
            "| family | backbone | params | mAP50-95 | mAP50 | train wall s |\n|---|---|---|---|---|---|\n")
    table = "".join(
        f"| {f} | {b} | {g.get('params', '-'):,} | {g.get('map50_95', float('nan')):.3f} | {g.get('map50', float('nan')):.3f} "
        f"| {g.get('wall_s', float('nan')):.0f} |\n" if "error" not in g else f"| {f} | {b} | - | error: {g['error']} | | |\n"
        for f, b, g in rows)
    out = Path(args.out)
    old = out.read_text() if out.is_file() else "# Learning benchmark results (benchmarks/learn.py), newest first\n\n"
    title, _, rest = old.partition("\n\n")
    out.write_text(f"{title}\n\n{head}{table}\n{rest}")
    print(head + table)


if __name__ == "__main__":
    main()
