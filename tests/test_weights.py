"""`apply --weights FILE`: a local timm checkpoint is wired in, and the checkout loads it when it builds the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import backbone_vs_checkpoint, run_cli, tree_digest
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")


@pytest.mark.slow
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
    result = backbone_vs_checkpoint(repo, yaml_path, ckpt, "ultralytics")
    # every parameter and BN statistic of the backbone is the checkpoint's
    assert result["missing"] == [] and result["equal"] == result["backbone_keys"] > 0, result
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before


def test_weights_with_a_missing_backbone_key_refused_before_writing_naming_it(ultralytics_checkout, tmp_path):
    """Checked before the first byte is written (issue 8): exit 2, one line naming the key, the checkout untouched."""
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    state = timm.create_model("mobilenetv4_conv_small", pretrained=False).state_dict()
    dropped = sorted(k for k in state if k.startswith("blocks.1.") and k.endswith(".weight"))[0]
    state.pop(dropped)
    ckpt = tmp_path / "broken.pth"
    torch.save(state, ckpt)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--weights", ckpt, check=2)
    assert dropped in proc.stderr and "[weights]" in proc.stderr and "Traceback" not in proc.stderr
    assert tree_digest(repo) == before


def test_weights_file_must_exist(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8",
                   "--weights", tmp_path / "nope.pth", check=2)
    assert "[weights]" in proc.stderr and "nope.pth" in proc.stderr
    assert tree_digest(repo) == before


@pytest.mark.slow
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
    result = backbone_vs_checkpoint(root, "models/yolov5n-repvit_m1.yaml", ckpt, "yolov5", yolov5_env)
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


# The backbone as the detector holds it (model.model[0]), run on one input in eval mode; its four maps saved.
MAPS = r"""
import sys, yaml, torch
root, kind, out, x_path = sys.argv[1:5]
cfgs = sys.argv[5:]
sys.path.insert(0, root)
x = torch.load(x_path)
maps = {}
for cfg in cfgs:
    if kind == "yolov5":
        from models.yolo import Model
        model = Model(cfg, ch=3, nc=80)
    else:
        from ultralytics.nn.tasks import DetectionModel
        d = yaml.safe_load(open(cfg)); d["scale"] = "n"
        model = DetectionModel(d, nc=80, verbose=False)
    with torch.no_grad():
        maps[cfg] = [t.clone() for t in model.model[0].eval()(x)]
torch.save(maps, out)
"""

SAME_AS_TIMM = ("mobilenetv2", "mobilenetv4_hybrid_medium", "repvit_m1")  # one per family (hybrid: MQA norms)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ultralytics", "yolov5"])
def test_inside_the_detector_the_backbone_computes_what_timm_computes(kind, ultralytics_checkout, tmp_path, yolov5_env):
    """With --weights, the built detector's backbone gives timm's feature maps for the same checkpoint: the
    detector's own init (stride probe, initialize_weights' BatchNorm eps) must not change what it computes."""
    from test_backbones import Reference

    if kind == "yolov5":
        root, env = make_git(tmp_path / "yolov5", "7.0.14"), yolov5_env
        yaml_of = "models/yolov5n-{}.yaml".format
    else:  # before upstream's own stride-probe fix
        root, env = ultralytics_checkout("8.2.103"), {}
        yaml_of = "ultralytics/cfg/models/v8/yolov8-{}.yaml".format
    refs = {bid: Reference(bid, tmp_path) for bid in SAME_AS_TIMM}
    for bid, ref in refs.items():
        run_cli("apply", "--repo", root, "--backbone", bid, "--arch", "yolov5" if kind == "yolov5" else "yolov8",
                "--weights", ref.path, "--no-verify", env=env, check=0)
    x = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", MAPS, str(root), kind, str(tmp_path / "maps.pt"), str(tmp_path / "x.pt"),
                           *[yaml_of(b) for b in refs]], capture_output=True, text=True, cwd=root, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    maps = torch.load(tmp_path / "maps.pt")
    for bid, ref in refs.items():
        ours, theirs = maps[yaml_of(bid)], ref.maps(x)
        assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs], bid
        for k, (a, b) in enumerate(zip(ours, theirs)):
            err = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
            assert err <= 1e-5, (bid, f"stride {4 * 2 ** k}", err)  # eps 1e-3 instead of 1e-5 is ~1e-4 here
