"""revert warns about trained checkpoints that need the patched backbone (Ultralytics 8.4.190, real sources).

A checkpoint saved by the trainer pickles the whole model, so after revert deletes the backbone's source it
no longer loads. The test saves checkpoints the way the trainer does (`torch.save({"model": model})` under
`runs/`) with the checkout's own classes, then checks what a user would: revert names exactly the checkpoint
of the patched model (not the stock one), the note is true (the checkpoint loads before revert, fails after),
and the way out it gives works (apply the same backbone again: it loads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest
from mbpatch.checkpoints import module_names

SAVE = r"""
import sys, yaml, torch
root, cfg, out = sys.argv[1:4]
sys.path.insert(0, root)
from ultralytics.nn.tasks import DetectionModel
d = yaml.safe_load(open(cfg)); d["scale"] = "n"
model = DetectionModel(d, nc=80, verbose=False)
import os; os.makedirs(os.path.dirname(out), exist_ok=True)
torch.save({"model": model, "epoch": 0}, out)
"""

LOAD = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
ck = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
print(type(ck["model"].model[0]).__name__)
"""


def _py(script, *args, root):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=str(root), env=env)


def test_module_names_of_deleted_sources():
    assert module_names(["ultralytics/nn/AddModules/mobilenetv4.py", "ultralytics/nn/AddModules/__init__.py",
                         "ultralytics/cfg/models/v8/yolov8-mobilenetv4_small.yaml"]) == ["AddModules.mobilenetv4"]
    assert module_names(["models/repvit.py"]) == ["models.repvit"]


@pytest.mark.slow
def test_revert_names_checkpoints_that_need_the_backbone(ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    package_before = tree_digest(root / "ultralytics")
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--no-verify", check=0)
    cfg = root / "ultralytics/cfg/models/v8"
    ours = root / "runs/detect/train/weights/best.pt"
    stock = root / "runs/detect/stock/weights/best.pt"
    for yaml_path, out in ((cfg / "yolov8-mobilenetv4_small.yaml", ours), (cfg / "yolov8.yaml", stock)):
        proc = _py(SAVE, root, yaml_path, out, root=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = _py(LOAD, root, ours, root=root)
    assert loaded.returncode == 0 and loaded.stdout.split()[-1] == "MobileNetV4ConvSmall", loaded.stderr[-2000:]

    dry = json.loads(run_cli("revert", "--repo", root, "--dry-run", "--json", check=0).stdout)
    assert dry["checkpoints_needing_patch"] == ["runs/detect/train/weights/best.pt"]
    proc = run_cli("revert", "--repo", root, check=0)
    text = " ".join(proc.stdout.split())
    assert "runs/detect/train/weights/best.pt" in text and "stock" not in text
    assert f"mbpatch apply --repo {root} --backbone mobilenetv4_small --arch yolov8" in text  # runnable as printed
    assert tree_digest(root / "ultralytics") == package_before  # revert itself is unchanged

    after = _py(LOAD, root, ours, root=root)
    assert after.returncode != 0 and "AddModules" in after.stderr  # what the note warned about
    assert _py(LOAD, root, stock, root=root).returncode == 0

    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--no-verify", check=0)
    again = _py(LOAD, root, ours, root=root)
    assert again.returncode == 0 and again.stdout.split()[-1] == "MobileNetV4ConvSmall", again.stderr[-2000:]
