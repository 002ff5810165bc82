"""Every task trains: `mbpatch apply --arch F --task T` then `mbpatch verify --train` on Ultralytics 8.4.190.

For each task (detect, segment, pose, obb, classify) a family and a backbone in rotation: the patched model is
built by the checkout's own trainer, trained one epoch on the generated dataset of its task (boxes, polygons,
keypoints, rotated boxes, class folders: patcher/datasets.py), validated, and best.pt reloaded in a new
process; the checkpoint holds the patched network; nothing is written into the checkout; revert is byte-exact.
The label files are checked against the drawn shapes first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, tree_digest, unpacked
from mbpatch import datasets

METRIC = {"detect": "metrics/mAP50(B)", "segment": "metrics/mAP50(M)", "pose": "metrics/mAP50(P)", "obb": "metrics/mAP50(B)",
          "classify": "metrics/accuracy_top1"}


def test_labels_match_the_drawn_shapes(tmp_path):
    """Each label's region has the object's colour, the background around it differs (detect, pose, seg, obb)."""
    for task in ("detect", "segment", "pose", "obb"):
        data = json.loads(Path(datasets.make(task, str(tmp_path / task), n_train=4, n_val=2, size=96)).read_text())
        if task == "pose":
            assert data["kpt_shape"] == [4, 3] and data["flip_idx"] == [1, 0, 3, 2]
        labels = sorted((tmp_path / task / "labels" / "train").glob("*.txt"))
        assert len(labels) == 4 and len(list((tmp_path / task / "images" / "val").glob("*.png"))) == 2
        for lab in labels:
            rows = [list(map(float, line.split())) for line in lab.read_text().splitlines()]
            assert 1 <= len(rows) <= 3
            for r in rows:
                coords = r[1:5] + [v for k, v in enumerate(r[5:]) if k % 3 != 2] if task == "pose" else r[1:]
                assert r[0] in (0, 1) and all(0 <= v <= 1 for v in coords), (task, r)
                if task == "pose":
                    assert r[7::3] == [2.0] * 4  # every corner visible
                n = len(r) - 1
                assert {"detect": n == 4, "pose": n == 4 + 12, "obb": n == 8, "segment": n in (8, 32)}[task], (task, r)
        # the last-drawn object is on top: its centre pixel differs from the image corner (background)
        img = np.asarray(Image.open(tmp_path / task / "images" / "train" / "0003.png"))
        r = rows[-1]
        xs, ys = (r[1::2], r[2::2]) if task in ("segment", "obb") else ([r[1]], [r[2]])
        cx, cy = int(np.mean(xs) * 96), int(np.mean(ys) * 96)
        assert img.shape == (96, 96, 3)
        assert np.abs(img[cy, cx].astype(int) - img[0, 0].astype(int)).sum() > 0
    folder = Path(datasets.make("classify", str(tmp_path / "cls"), n_train=4, n_val=2))
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(datasets.NAMES)


# One family per task, rotating, and a different backbone each (issue 9): the patched model of that family and
# task trains one epoch on the generated dataset of its task, validates, and its best.pt reloads in a new process.
PATCHED = [("detect", "yolo26", "mobilenetv4_small"), ("segment", "yolo26", "repvit_m0_9"),
           ("pose", "yolo11", "mobilenetv2"), ("obb", "yolo12", "mobilenetv4_small"), ("classify", "yolov8", "repvit_m1_0")]
HEAD = {"detect": "Detect", "segment": "Segment", "pose": "Pose", "obb": "OBB", "classify": "Classify"}


@pytest.mark.slow
@pytest.mark.parametrize("task,arch,backbone", PATCHED)
def test_patched_task_model_trains_on_its_generated_dataset(tmp_path, task, arch, backbone):
    root = tmp_path / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    pristine = tree_digest(root)
    applied = run_cli("apply", "--repo", root, "--backbone", backbone, "--arch", arch, "--task", task,
                      "--no-verify", "--json", check=0)
    yamls = [c for c in json.loads(applied.stdout)["changed"] if c.endswith(".yaml")]
    assert len(yamls) == 1, yamls
    patched = tree_digest(root)
    proc = run_cli("verify", "--repo", root, "--train", "--imgsz", "64", "--json", "--work", tmp_path / "work")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"], proc.stdout[-4000:] + proc.stderr[-2000:]
    tr = doc["train"]
    assert tr["task"] == task
    assert tr["train"]["loss_finite"] and METRIC[task] in tr["train"]["metrics"], tr["train"]["metrics"]
    assert tr["reload"]["ok"] and tr["reload"]["output_finite"], tr["reload"]
    # the trained checkpoint holds the patched network: the backbone at layer 0, the task's own head last
    ckpt = tr["train"]["best"]
    probe = subprocess.run([sys.executable, "-c", CKPT_LAYERS, str(root), ckpt], capture_output=True, text=True,
                           cwd=root, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.returncode == 0, probe.stderr[-2000:]
    first, last = json.loads(probe.stdout.strip().splitlines()[-1])
    assert first not in ("Conv", "HGStem"), first
    assert last.startswith(HEAD[task]) or (task == "detect" and last.startswith("Detect")), last
    assert tree_digest(root) == patched  # training wrote nothing into the checkout
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == pristine


CKPT_LAYERS = r"""
import json, sys, os
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
sys.path.insert(0, sys.argv[1])
import torch
ckpt = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
layers = ckpt["model"].model
print(json.dumps([type(layers[0]).__name__, type(layers[-1]).__name__]))
"""
