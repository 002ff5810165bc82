"""The generated datasets of every task train the STOCK task models of Ultralytics 8.4.190 for one epoch.

This proves the generator (patcher/datasets.py) and the train / reload steps (patcher/train.py) for segment,
pose, obb and classify before patched task yamls exist: the model is built from the release's own yaml
(`yolov8n-seg.yaml`, no weights), trained with the checkout's trainer, validated, and best.pt reloaded in a
new process. The label files are checked against the drawn shapes first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tree_digest, unpacked
from mbpatch import datasets
from mbpatch.train import task_of_yaml, train_check
from mbpatch.verify import Target

STOCK = {"segment": "v8/yolov8-seg.yaml", "pose": "v8/yolov8-pose.yaml", "obb": "v8/yolov8-obb.yaml",
         "classify": "v8/yolov8-cls.yaml"}
METRIC = {"segment": "metrics/mAP50(M)", "pose": "metrics/mAP50(P)", "obb": "metrics/mAP50(B)",
          "classify": "metrics/accuracy_top1"}


@pytest.fixture(scope="module")
def u84(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks") / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    return root


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


@pytest.mark.parametrize("task", ["segment", "pose", "obb", "classify"])
def test_stock_task_model_trains_on_its_generated_dataset(u84, tmp_path, task):
    stock = u84 / "ultralytics" / "cfg" / "models" / STOCK[task]
    assert task_of_yaml(stock) == task
    target = Target(u84, "ultralytics", "", stock, stock, True, "n", 80)
    before = tree_digest(u84)
    doc = train_check(target, "yolov8", task, imgsz=64, epochs=1, batch=8, work=str(tmp_path))
    tr = doc["train"]
    print(f"{task}: train {tr.get('train_s', 0):.1f} s, wall {doc['wall_s']:.1f} s")
    assert doc["ok"], json.dumps(doc, default=str)[-4000:]
    assert tr["loss_finite"] and METRIC[task] in tr["metrics"], tr["metrics"]
    assert doc["reload"]["output_finite"]
    assert tree_digest(u84) == before
