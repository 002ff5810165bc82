"""Benchmark: does the patched detector learn? From-scratch training on a generated, seeded dataset.

For each family (yolov8, yolo11, yolo26 at scale n) and each backbone (stock, then the catalogue), a fresh
copy of the Ultralytics checkout is patched with `mbpatch apply --no-verify` and trained from random weights with
the same settings (seed 0, deterministic, CPU, the same epochs); the row is the mAP50-95 and mAP50 of the
trainer's final validation (of best.pt) and the wall time of the training run. The dataset is harder than
`verify --train`'s 16 images: more images, several classes of shapes, smaller objects, up to 4 per image.

A generated dataset ranks wiring and capacity (can gradients reach every layer, does the neck get enough
channels), NOT ImageNet transfer: pretrained backbones are not used here.

Resumable: every finished row is appended at once to a JSON file (`--json`, default
benchmarks/learn-results.json) under the hash of the configuration; a re-run skips the rows already there for
the same configuration, so the run can be done in chunks (`--max-rows N`, or Ctrl-C between rows) and across
sessions. The markdown tables in `--out` (between the two `learn.py` marker lines) are rewritten from the JSON
after every row; text outside the markers is kept.

    python benchmarks/learn.py [--families yolov8 yolo11 yolo26] [--backbones stock mobilenetv2_050 ...]
        [--max-rows N] [--threads 1] [--work DIR]
    python benchmarks/learn.py --table        # only rewrite the markdown from the JSON

Not a test. Each row runs in its own process (YOLO_CONFIG_DIR of its own).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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
FAMILIES = ("yolov8", "yolo11", "yolo26")
SHAPES = ("rectangle", "ellipse", "triangle", "cross")
# rows first in this order (the thin-map question first), then the rest of the catalogue
FIRST = ("stock", "mobilenetv2_050", "mobilenetv2_050_wide", "mobilenetv4_small", "repvit_m1", "mobilenetv2_075",
         "mobilenetv2_075_wide", "mobilenetv2", "mobilenetv2_wide")
BEGIN, END = "<!-- learn.py: tables from the JSON, begin -->", "<!-- learn.py: end -->"

# The fixed configuration (its hash names the rows in the JSON). Why these values: see RESULTS-learn.md.
CONFIG = {
    "release": "8.4.190",
    "generator": 2,  # bump when make_dataset draws different images
    "train": 64, "val": 32, "imgsz": 96, "classes": 3, "obj": [0.15, 0.35], "max_objects": 4,
    "epochs": 40, "batch": 4,
    # nbs = batch: one optimizer step per batch. Ultralytics' default nominal batch (64) accumulates 16 batches of
    # 4 per step, which left 30 steps in 30 epochs: the reduced run of 2026-12-07 learned nothing that way.
    "train_args": {"nbs": 4, "optimizer": "AdamW", "lr0": 0.004},
    "seed": 0,
}


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def make_dataset(folder: Path, config: dict) -> Path:
    """Noisy one-colour backgrounds with 1..max_objects filled shapes that do not overlap, each in a colour far
    from the background's (no invisible object, no hidden one: the labels are exact)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(config["seed"])
    size, (lo, hi) = config["imgsz"], config["obj"]
    for split in ("train", "val"):
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k in range(config[split]):
            base = rng.integers(40, 216, size=3)
            pixels = np.clip(base + rng.integers(-30, 31, size=(size, size, 3)), 0, 255).astype("uint8")
            img = Image.fromarray(pixels)
            draw = ImageDraw.Draw(img)
            boxes, lines = [], []
            for _ in range(int(rng.integers(1, config["max_objects"] + 1))):
                c = int(rng.integers(0, config["classes"]))
                w, h = (float(v) for v in rng.uniform(lo, hi, size=2) * size)
                for _try in range(30):  # a free place, or no object
                    x0, y0 = (float(v) for v in rng.uniform(0, 1, size=2) * (size - w, size - h))
                    box = (x0, y0, x0 + w, y0 + h)
                    apart = (box[2] + 2 < b[0] or b[2] + 2 < box[0] or box[3] + 2 < b[1] or b[3] + 2 < box[1] for b in boxes)
                    if all(apart):
                        break
                else:
                    continue
                boxes.append(box)
                colour = rng.integers(0, 256, size=3)
                while abs(colour.astype(int) - base).sum() < 150:
                    colour = rng.integers(0, 256, size=3)
                fill = tuple(int(v) for v in colour)
                x0, y0, x1, y1 = box
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                if SHAPES[c] == "rectangle":
                    draw.rectangle([x0, y0, x1, y1], fill=fill)
                elif SHAPES[c] == "ellipse":
                    draw.ellipse([x0, y0, x1, y1], fill=fill)
                elif SHAPES[c] == "triangle":
                    draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
                else:  # a plus sign filling its box
                    draw.rectangle([x0, cy - h / 6, x1, cy + h / 6], fill=fill)
                    draw.rectangle([cx - w / 6, y0, cx + w / 6, y1], fill=fill)
                lines.append(f"{c} {cx / size:.6f} {cy / size:.6f} {w / size:.6f} {h / size:.6f}")
            img.save(folder / "images" / split / f"{k:05d}.png")
            (folder / "labels" / split / f"{k:05d}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(folder), "train": "images/train", "val": "images/val", "nc": config["classes"],
            "names": list(SHAPES[:config["classes"]])}
    path = folder / "data.yaml"
    path.write_text(json.dumps(data, indent=1))  # JSON is YAML
    return path


# One training run in a fresh interpreter with the checkout first on sys.path.
TRAIN = r"""
import json, os, sys, time
root, model_yaml, data, project, threads = sys.argv[1:6]
config = json.loads(sys.argv[6])
sys.path.insert(0, root)
import torch
threads = int(threads) or torch.get_num_threads()
import ultralytics
from ultralytics import YOLO
torch.set_num_threads(threads)  # Ultralytics sets cores - 1 at import
model = YOLO(model_yaml)
t0 = time.perf_counter()
model.train(data=data, epochs=config["epochs"], imgsz=config["imgsz"], batch=config["batch"], seed=config["seed"],
            deterministic=True, workers=0, device="cpu", plots=False, amp=False, project=project, name="run",
            exist_ok=True, verbose=False, **config["train_args"])
wall = time.perf_counter() - t0
params = sum(p.numel() for p in model.trainer.model.parameters())  # as trained: the dataset's nc
m = model.trainer.metrics
print("@@LEARN@@" + json.dumps({"map50_95": m.get("metrics/mAP50-95(B)"), "map50": m.get("metrics/mAP50(B)"),
                                "wall_s": wall, "params": params, "torch_threads": torch.get_num_threads(),
                                "torch": torch.__version__, "ultralytics": ultralytics.__version__}))
"""


def checkout(release: str, dest: Path) -> Path:
    src = CACHE / "src" / f"ultralytics-{release}"
    if not (src / "ultralytics").is_dir():
        subprocess.run([sys.executable, "-m", "mbpatch", "fetch", f"ultralytics=={release}", str(dest)], check=True)
        return dest
    shutil.copytree(src, dest)
    return dest


def variant(backbone: str) -> str:
    if backbone.endswith("_wide"):
        return "wide taps (SSDLite)"
    return "stage outputs" if backbone.startswith("mobilenetv2") else "-"


def run_row(config, family, backbone, data, threads, work: Path) -> dict:
    row_dir = work / f"{family}-{backbone}"
    shutil.rmtree(row_dir, ignore_errors=True)
    root = checkout(config["release"], row_dir / "ultralytics")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(YOLO_CONFIG_DIR=str(row_dir / "yolo-config"), YOLO_OFFLINE="1")
    if backbone == "stock":
        model = f"{family}n.yaml"
    else:
        subprocess.run([sys.executable, "-m", "mbpatch", "apply", "--repo", str(root), "--backbone", backbone,
                        "--arch", family, "--nc", str(config["classes"]), "--no-verify", "--json"],
                       check=True, capture_output=True, env=env)
        model = f"{family}n-{backbone}.yaml"  # the bare name: the checkout finds it (see patcher/load_path.py)
    load_before = os.getloadavg()
    argv = [str(root), model, str(data), str(row_dir / "runs"), str(threads), json.dumps(config)]
    proc = subprocess.run([sys.executable, "-c", TRAIN, *argv], capture_output=True, text=True, env=env, cwd=str(row_dir))
    load_after = os.getloadavg()
    shutil.rmtree(row_dir, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("@@LEARN@@"):
            got = json.loads(line[len("@@LEARN@@"):])
            got["load_avg_1_5_15"] = {"before": [round(v, 2) for v in load_before],
                                      "after": [round(v, 2) for v in load_after]}
            return got
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def pending(rows: list, h: str, families, backbones) -> list:
    """(family, backbone) pairs in run order that `rows` has no result for under configuration hash `h`."""
    done = {(r["family"], r["backbone"]) for r in rows if r["config_hash"] == h}
    return [(f, b) for f in families for b in backbones if (f, b) not in done]


def read_rows(path: Path) -> list:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def append_row(path: Path, row: dict) -> None:
    rows = read_rows(path) + [row]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of it


def describe(config: dict) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(config["train_args"].items()))
    return (f"Ultralytics {config['release']}; {config['train']} train / {config['val']} val generated images "
            f"(generator {config['generator']}), {config['classes']} classes ({', '.join(SHAPES[:config['classes']])}), "
            f"1-{config['max_objects']} non-overlapping objects per image, sides {config['obj'][0]:g}-{config['obj'][1]:g} of "
            f"the image; imgsz {config['imgsz']}, {config['epochs']} epochs from scratch, batch {config['batch']}"
            f"{', ' + extra if extra else ''}, seed {config['seed']}, CPU; otherwise Ultralytics' defaults.")


def table(rows: list, order: list) -> str:
    """Markdown: one section per configuration hash (newest first), rows in the run order."""
    by_hash = {}
    for row in rows:
        by_hash.setdefault(row["config_hash"], []).append(row)
    out = []
    for h, group in sorted(by_hash.items(), key=lambda kv: max(r["finished_utc"] for r in kv[1]), reverse=True):
        group.sort(key=lambda r: (FAMILIES.index(r["family"]) if r["family"] in FAMILIES else 9,
                                  order.index(r["backbone"]) if r["backbone"] in order else len(order)))
        out.append(f"### Configuration {h}\n\n{describe(group[0]['config'])}\n\n"
                   "| family | backbone | taps | params | mAP50-95 | mAP50 | train wall s | load avg (1 min, before/after) "
                   "| threads | finished (UTC) |\n|---|---|---|---:|---:|---:|---:|---|---:|---|\n")
        for r in group:
            load = r["load_avg_1_5_15"]
            out.append(f"| {r['family']} | {r['backbone']} | {r['variant']} | {r['params']:,} | {r['map50_95']:.3f} "
                       f"| {r['map50']:.3f} | {r['wall_s']:.0f} | {load['before'][0]:.1f} / {load['after'][0]:.1f} "
                       f"| {r['torch_threads']} | {r['finished_utc']} |\n")
        out.append("\n")
    return "".join(out)


def write_markdown(out: Path, rows: list, order: list) -> None:
    old = out.read_text() if out.is_file() else f"# Learning benchmark results (benchmarks/learn.py)\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old:
        title, _, rest = old.partition("\n\n")
        old = f"{title}\n\n{BEGIN}\n{END}\n\n{rest}"
    head, _, tail = old.partition(BEGIN)
    _, _, tail = tail.partition(END)
    out.write_text(f"{head}{BEGIN}\n\n{table(rows, order)}{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--backbones", nargs="+", default=None, help="default: stock and every catalogue backbone")
    ap.add_argument("--max-rows", type=int, default=None, help="stop after this many new rows (resume later)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the training child (0: torch's default)")
    ap.add_argument("--work", default=None, help="folder for checkouts, dataset and runs (default: a temp folder)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "learn-results.json"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-learn.md"))
    ap.add_argument("--table", action="store_true", help="only rewrite the markdown from the JSON")
    args = ap.parse_args()
    from mbpatch.templates import AVAILABLE, CATALOG

    order = list(FIRST) + [b for b in CATALOG if b in AVAILABLE and b not in FIRST]
    backbones = args.backbones or order
    results, out = Path(args.json), Path(args.out)
    if args.table:
        write_markdown(out, read_rows(results), order)
        return
    h = config_hash(CONFIG)
    todo = pending(read_rows(results), h, args.families, backbones)
    print(f"configuration {h}: {len(todo)} row(s) to run", flush=True)
    if args.max_rows is not None:
        todo = todo[:args.max_rows]
    if not todo:
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="mbpatch-learn-"))
    data = make_dataset(work / f"data-{h}", CONFIG) if not (work / f"data-{h}" / "data.yaml").is_file() \
        else work / f"data-{h}" / "data.yaml"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "patcher",
                              "recipes", "templates", "benchmarks/learn.py"], capture_output=True, text=True)
    changed = changed.stdout.strip()
    commit += "+uncommitted changes" if changed else ""
    for family, backbone in todo:
        got = run_row(CONFIG, family, backbone, data, args.threads, work)
        print(family, backbone, json.dumps(got), flush=True)
        if "error" in got:
            continue  # not recorded: the next run tries it again
        row = {"config_hash": h, "config": CONFIG, "family": family, "backbone": backbone, "variant": variant(backbone),
               "params": got["params"], "map50_95": got["map50_95"], "map50": got["map50"], "epochs": CONFIG["epochs"],
               "wall_s": round(got["wall_s"], 1), "torch_threads": got["torch_threads"],
               "load_avg_1_5_15": got["load_avg_1_5_15"],
               "versions": {"python": platform.python_version(), "torch": got["torch"],
                            "ultralytics": got["ultralytics"], "mbpatch_commit": commit},
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "finished_utc": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"}
        append_row(results, row)
        write_markdown(out, read_rows(results), order)


if __name__ == "__main__":
    main()
