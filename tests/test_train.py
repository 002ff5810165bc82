"""`mbpatch verify --train` (and `--export onnx` where the same checkout serves) on real checkouts.

Each test patches a real release, runs `mbpatch verify --train --json --work <tmp>` as a user would, and checks
what a user looks at: exit 0, losses finite, validation metrics computed, the trainer's best.pt under the work
folder, that best.pt reloads (the product does it in a new process; the test also opens it itself and finds
the backbone class in it), and that the checkout's bytes did not change. One epoch at imgsz 64 on 16
generated images (8 for validation), batch 8.

YOLOv5 git layouts: the git tree of v7.0 is made from PyPI yolov5 7.0.14 as conftest_yolov5.make_git does;
train.py and its imports then still carry the PyPI package's own additions (`from yolov5 import __version__`,
a Roboflow import, the PyPI `helpers` module (COCO conversion, hub and S3 uploads), Hugging Face hub lookups), which the git tree of v7.0 does not have. `git_trainable`
removes those lines; everything else (the trainer, strip_optimizer, val.py, the loaders) is the release's code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest
from conftest_yolov5 import FIXTURES, make_git, make_master

PYPI_ONLY = (  # (file, PyPI 7.0.14 line, what the git tree has instead)
    ("train.py", "from yolov5 import __version__\n", "__version__ = '7.0'\n"),
    ("train.py", "from utils.roboflow import RoboflowConnector\n", "RoboflowConnector = None\n"),
    ("train.py", "from helpers import (convert_coco_dataset_to_yolo, push_to_hfhub,\n                            upload_to_s3)\n",
     "push_to_hfhub = upload_to_s3 = None\n\n\ndef convert_coco_dataset_to_yolo(opt, save_dir):\n    pass\n"),
    ("train.py", "    result = attempt_download_from_hub(weights, hf_token=None)\n", "    result = None\n"),
    ("utils/downloads.py", "    result = attempt_download_from_hub(file, hf_token=hf_token)\n", "    result = None\n"),
    # DetectMultiBackend's lookup (verify --export loads the exported file with it)
    ("models/common.py", "        result = attempt_download_from_hub(w, hf_token=hf_token, revision=revision)\n",
     "        result = None\n"),
    ("utils/loggers/neptune/neptune_utils.py", "from yolov5 import __version__\n", "__version__ = '7.0'\n"),
    ("utils/loggers/wandb/wandb_utils.py", "from yolov5 import __version__\n", "__version__ = '7.0'\n"),
)


def git_trainable(root: Path) -> Path:
    for rel, old, new in PYPI_ONLY:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return root


def verify_train(root: Path, work: Path, *extra, python=None):
    t0 = time.perf_counter()
    proc = run_cli("verify", "--repo", root, "--train", "--json", "--work", work, *extra)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    print(f"verify --train {' '.join(map(str, extra))}: {took:.1f} s (train {doc['train']['train'].get('train_s', 0):.1f} s)")
    return doc


def check_trained(doc: dict, root: Path, work: Path, backbone_class: str):
    tr = doc["train"]
    assert tr["ok"] and tr["loss_finite"] and tr["metrics_computed"] and tr["reload_ok"], tr
    losses = tr["train"]["losses"]
    assert losses and all(v == v and abs(v) < 1e6 for v in losses.values()), losses
    assert any("mAP" in k for k in tr["train"]["metrics"]), tr["train"]["metrics"]
    best = Path(tr["train"]["best"])
    assert best.is_file() and work in best.parents, best
    assert tr["reload"]["output_finite"] and tr["reload"]["output"][0] == 1
    # open the checkpoint ourselves: the trained model holds the patched backbone at layer 0
    script = ("import sys, torch; sys.path.insert(0, sys.argv[2]); "
              "ck = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
              "m = ck.get('ema') or ck['model']; print(type(m.model[0]).__name__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script, str(best), str(root)], capture_output=True, text=True,
                         env=env, cwd=str(root))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == backbone_class


@pytest.fixture(scope="module")
def u84(tmp_path_factory):
    from conftest import unpacked

    root = tmp_path_factory.mktemp("u84") / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    return root


@pytest.mark.slow
def test_train_and_export_yolov8_mobilenetv4_on_8_4_190(u84, tmp_path):
    run_cli("apply", "--repo", u84, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_train(u84, tmp_path, "--export", "onnx")
    check_trained(doc, u84, tmp_path, "MobileNetV4ConvSmall")
    assert doc["train"]["train"]["env_set"] is None  # 8.4.190 passes weights_only=False itself
    ex = doc["export"]
    assert ex["ok"] and ex["export"]["equal"], ex
    assert Path(ex["export"]["file"]).is_file() and tmp_path in Path(ex["export"]["file"]).parents
    assert ex["export"]["onnx_shape"] == ex["export"]["torch_shape"] == [1, 84, 84]  # 80 classes + 4, 8x8+4x4+2x2 cells
    assert ex["export"]["max_abs_diff"] <= ex["export"]["rtol"] * max(1.0, ex["export"]["ref_max_abs"])
    assert ex["export"]["input_sensitivity"] > 100 * ex["export"]["atol"]  # another image moves the output: a real check
    assert tree_digest(u84) == before  # nothing written into the checkout
    run_cli("revert", "--repo", u84, check=0)


@pytest.mark.slow
def test_train_and_export_rtdetr_repvit_on_8_4_190(u84, tmp_path):
    run_cli("apply", "--repo", u84, "--backbone", "repvit_m0_9", "--arch", "rtdetr", "--head", "light", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_train(u84, tmp_path, "--export", "onnx")
    check_trained(doc, u84, tmp_path, "RepViTM0_9")
    ex = doc["export"]
    assert ex["ok"] and ex["export"]["equal"], ex
    # batch x queries (at most 300) x (4 box + class scores)
    shape = ex["export"]["onnx_shape"]
    assert shape == ex["export"]["torch_shape"] and shape[0] == 1 and shape[1] <= 300 and shape[2] > 4
    # rows are a top-k selection: compared as a set, the rows tied at the k-th score left out
    e = ex["export"]
    print(f"RT-DETR export: {e['matched']}/{e['compared']} detections matched, {e['at_boundary']} at the top-k "
          f"boundary, box diff {e['max_abs_diff']:.3g}, score diff {e['score_max_diff']:.3g}")
    assert e["compared"] >= shape[1] // 2 and e["matched"] == e["compared"]
    assert e["compared"] + e["at_boundary"] == shape[1]
    assert tree_digest(u84) == before
    run_cli("revert", "--repo", u84, check=0)


@pytest.mark.slow
def test_export_mobilenetv2_yolo11_on_8_4_190(u84, tmp_path):
    """The third backbone family, through the exporter only (--export without --train)."""
    run_cli("apply", "--repo", u84, "--backbone", "mobilenetv2", "--arch", "yolo11", "--no-verify", check=0)
    proc = run_cli("verify", "--repo", u84, "--export", "onnx", "--json", "--work", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ex = json.loads(proc.stdout)["export"]
    assert ex["ok"] and ex["export"]["equal"] and ex["export"]["size_bytes"] > 1_000_000, ex
    assert "train" not in json.loads(proc.stdout)
    run_cli("revert", "--repo", u84, check=0)


@pytest.mark.slow
def test_train_on_8_1_20_needs_the_torch_load_switch(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.1.20")
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    before = tree_digest(root)
    doc = verify_train(root, tmp_path / "work")
    check_trained(doc, root, tmp_path / "work", "MobileNetV2")
    tr = doc["train"]["train"]
    import torch

    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6):
        assert tr["env_set"]["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # 8.1.x's torch_safe_load lacks weights_only
    import numpy

    if not hasattr(numpy, "trapz"):
        assert tr["compat"]["numpy.trapz"] == "numpy.trapezoid"
    assert tree_digest(root) == before


@pytest.mark.slow
def test_train_and_export_yolov5_v7_0_git(tmp_path):
    root = git_trainable(make_git(tmp_path / "yolov5", "7.0.14"))
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov5", "--no-verify", check=0)
    before = tree_digest(root)
    doc = verify_train(root, tmp_path / "work", "--export", "onnx")
    check_trained(doc, root, tmp_path / "work", "MobileNetV4ConvSmall")
    tr = doc["train"]["train"]
    assert "obj_loss" in " ".join(tr["losses"])  # YOLOv5's own loss terms: its trainer ran
    assert tr["env_set"]["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # strip_optimizer's torch.load
    ex = doc["export"]
    assert ex["ok"] and ex["export"]["equal"], ex
    assert ex["export"]["onnx_shape"] == ex["export"]["torch_shape"] == [1, 3 * (64 + 16 + 4), 85]
    assert tree_digest(root) == before


@pytest.mark.slow
def test_train_yolov5_master_layout(tmp_path):
    """Master loads best.pt through ultralytics.utils.patches.torch_load: training, strip_optimizer and the final
    validation work with this torch and no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (issue 17: doctor had said otherwise)."""
    root = git_trainable(make_master(tmp_path / "yolov5"))
    run_cli("apply", "--repo", root, "--backbone", "repvit_m0_9", "--arch", "yolov5", "--no-verify", check=0)
    before = tree_digest(root)
    doc = verify_train(root, tmp_path / "work")
    check_trained(doc, root, tmp_path / "work", "RepViTM0_9")
    assert not (doc["train"]["train"].get("env_set") or {}).get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    assert tree_digest(root) == before


@pytest.mark.slow
def test_export_repvit_yolo26_on_8_4_190(u84, tmp_path):
    """YOLO26, the release's default family (end-to-end head, reg_max 1), through the exporter; fused RepViT."""
    run_cli("apply", "--repo", u84, "--backbone", "repvit_m0_9", "--arch", "yolo26", "--no-verify", check=0)
    proc = run_cli("verify", "--repo", u84, "--export", "onnx", "--json", "--work", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    ex = json.loads(proc.stdout)["export"]
    assert ex["ok"] and ex["export"]["equal"], ex
    assert ex["export"]["onnx_shape"] == ex["export"]["torch_shape"] and ex["export"]["onnx_shape"][0] == 1
    run_cli("revert", "--repo", u84, check=0)
