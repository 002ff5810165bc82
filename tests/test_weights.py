"""`apply --weights FILE`: a local timm checkpoint is wired in, and the checkout loads it when it builds the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

CHECK = r"""
import sys, json, yaml, torch
sys.path.insert(0, sys.argv[1])
from ultralytics.nn.tasks import DetectionModel
d = yaml.safe_load(open(sys.argv[2])); d["scale"] = "n"
model = DetectionModel(d, nc=80, verbose=False)
ckpt = torch.load(sys.argv[3], map_location="cpu", weights_only=True)
own = model.model[0].state_dict()
same = [k for k, v in own.items() if k in ckpt and torch.equal(v.float(), ckpt[k].float())]
print(json.dumps({"backbone_keys": len(own), "equal": len(same), "missing": [k for k in own if k not in ckpt]}))
"""


def test_weights_are_loaded_when_the_model_is_built(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    reference = timm.create_model("mobilenetv4_conv_small", pretrained=False)
    ckpt = tmp_path / "mnv4s.pth"
    torch.save(reference.state_dict(), ckpt)  # the classifier and the 960 conv are extra keys, ignored
    doc = json.loads(run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8",
                             "--weights", ckpt, "--json", check=0).stdout)
    assert doc["verification"]["ok"], doc["verification"]
    yaml_path = repo / "ultralytics/cfg/models/v8/yolov8-mobilenetv4_small.yaml"
    out = subprocess.run([sys.executable, "-c", CHECK, str(repo), str(yaml_path), str(ckpt)],
                         capture_output=True, text=True, check=True, cwd=repo)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # every parameter and BN statistic of the backbone is the checkpoint's
    assert result["missing"] == [] and result["equal"] == result["backbone_keys"] > 0, result
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before


def test_weights_with_a_missing_backbone_key_fail_verification_naming_it(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.4.190")
    state = timm.create_model("mobilenetv4_conv_small", pretrained=False).state_dict()
    dropped = sorted(k for k in state if k.startswith("blocks.1.") and k.endswith(".weight"))[0]
    state.pop(dropped)
    ckpt = tmp_path / "broken.pth"
    torch.save(state, ckpt)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--weights", ckpt, check=1)
    assert dropped in proc.stderr + proc.stdout


def test_weights_file_must_exist(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8",
                   "--weights", tmp_path / "nope.pth", check=2)
    assert "[weights]" in proc.stderr and "nope.pth" in proc.stderr
    assert tree_digest(repo) == before


CHECK_YOLOV5 = r"""
import sys, json, torch
sys.path.insert(0, sys.argv[1])
from models.yolo import Model
model = Model(sys.argv[2], ch=3, nc=80)
ckpt = torch.load(sys.argv[3], map_location="cpu", weights_only=True)
own = model.model[0].state_dict()
same = [k for k, v in own.items() if k in ckpt and torch.equal(v.float(), ckpt[k].float())]
print(json.dumps({"backbone_keys": len(own), "equal": len(same), "missing": [k for k in own if k not in ckpt]}))
"""


def test_weights_in_a_yolov5_git_checkout(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    before = tree_digest(root)
    ckpt = tmp_path / "repvit_m1.pth"
    torch.save(timm.create_model("repvit_m1", pretrained=False).state_dict(), ckpt)
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov5", "--weights", ckpt,
                   "--json", env=yolov5_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["verification"]["ok"], doc["verification"]
    source = (root / "models" / "repvit.py").read_text()
    assert f"RepViTM1.default_weights = {str(ckpt)!r}" in source
    # a second apply of the same checkpoint changes nothing
    again = json.loads(run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov5", "--weights",
                               ckpt, "--no-verify", "--json", env=yolov5_env, check=0).stdout)
    assert again["changed"] == []
    env = {**os.environ, **yolov5_env}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", CHECK_YOLOV5, str(root), "models/yolov5n-repvit_m1.yaml", str(ckpt)],
                         capture_output=True, text=True, cwd=root, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["missing"] == [] and result["equal"] == result["backbone_keys"] > 0, result
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == before


def test_weights_refused_for_the_per_block_style(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    before = tree_digest(root)
    ckpt = tmp_path / "mnv2.pth"
    torch.save({}, ckpt)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov5", "--style", "blocks",
                   "--weights", ckpt, env=yolov5_env, check=2)
    assert "[weights]" in proc.stderr and "--style backbone" in proc.stderr
    assert tree_digest(root) == before
