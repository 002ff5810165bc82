"""stride_probe on real sources: with --weights, building the detector keeps the checkpoint's BatchNorm statistics.

In memory on every cached release (placed, idempotent, no line lost, not needed where the release does it
itself), then the effect a user cares about, measured with the checkout's own code: without the step the
stride probe of `Model(cfg)` moves the loaded running statistics; with it they are the checkpoint's.
"""

from __future__ import annotations

import collections
import json

import pytest

from conftest import backbone_vs_checkpoint, run_cli, tree_digest, unpacked
from conftest_yolov5 import VERSIONS as YOLOV5_VERSIONS
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)
from mbpatch.checkout import detect
from mbpatch.recipes import ALREADY, APPLIED, NOT_NEEDED, Context
from mbpatch.recipes.ultralytics.stride_probe import StrideProbe as UltralyticsStrideProbe
from mbpatch.recipes.yolov5.stride_probe import StrideProbe as Yolov5StrideProbe
from mbpatch.templates import lookup

ULTRALYTICS = ["8.0.0", "8.0.120", "8.0.200", "8.1.20", "8.2.103", "8.3.100", "8.3.253", "8.4.190"]
FIXED_UPSTREAM = ("8.3.253", "8.4.190")  # DetectionModel runs the probe with self.model.eval() itself


def lines(text):
    return collections.Counter(ln.strip() for ln in text.splitlines() if ln.strip())


def run_recipe(recipe, ctx):
    texts = {rel: ctx.checkout.read(rel) for rel in recipe.targets(ctx)}
    return texts, recipe.run(ctx, texts)


def check_placed(recipe, ctx, texts, out):
    assert out.status == APPLIED, out
    (rel, new), = out.changes.items()
    assert not lines(texts[rel]) - lines(new)  # every original line is kept
    added = lines(new) - lines(texts[rel])
    assert sum(added.values()) == 3 and "self.model.train()" in added
    compile(new, rel, "exec")
    new_lines = [ln.strip() for ln in new.splitlines()]
    probe = next(k for k, ln in enumerate(new_lines) if ln.startswith("m.stride = torch.tensor("))
    assert new_lines[probe - 2].startswith("self.model.eval()") and new_lines[probe - 1].startswith("m.training = True")
    assert new_lines[probe + 1] == "self.model.train()"
    again = recipe.run(ctx, {**texts, rel: new})
    assert again.status == ALREADY and not again.changes


@pytest.mark.parametrize("version", ULTRALYTICS)
def test_ultralytics_detection_model(version, tmp_path):
    co = detect(str(unpacked("ultralytics", version, "ultralytics")))
    ctx = Context(co, lookup("mobilenetv4_small"), "yolov8", weights=str(tmp_path / "w.pth"))
    texts, out = run_recipe(UltralyticsStrideProbe(), ctx)
    if version in FIXED_UPSTREAM:
        assert out.status == NOT_NEEDED and not out.changes, out
    else:
        check_placed(UltralyticsStrideProbe(), ctx, texts, out)
    # without --weights, and for RT-DETR (no probe forward), nothing to do
    assert UltralyticsStrideProbe().run(Context(co, lookup("mobilenetv4_small"), "yolov8"), texts).status == NOT_NEEDED
    ctx.arch = "rtdetr"
    assert UltralyticsStrideProbe().run(ctx, texts).status == NOT_NEEDED


@pytest.mark.parametrize("version", YOLOV5_VERSIONS)
def test_yolov5_model(version, tmp_path):
    co = detect(str(make_git(tmp_path / "yolov5", version)))
    ctx = Context(co, lookup("repvit_m1"), "yolov5", weights=str(tmp_path / "w.pth"))
    texts, out = run_recipe(Yolov5StrideProbe(), ctx)
    check_placed(Yolov5StrideProbe(), ctx, texts, out)


def checkpoint(tmp_path, name):
    timm = pytest.importorskip("timm")
    import torch

    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():  # statistics a real checkpoint has: not the fresh 0 / 1
        for key, value in model.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                value.copy_(torch.rand_like(value) + 0.5)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_yolov5_build_keeps_the_loaded_statistics(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    before = tree_digest(root)
    ckpt = checkpoint(tmp_path, "mobilenetv4_conv_small")
    args = ("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov5", "--no-verify", "--json")
    # the stock probe, as a user who loads the weights by hand has it: every statistic moves
    run_cli(*args, env=yolov5_env, check=0)
    (root / "models" / "mobilenetv4.py").open("a").write(f"MobileNetV4ConvSmall.default_weights = {str(ckpt)!r}\n")
    stock = backbone_vs_checkpoint(root, "models/yolov5n-mobilenetv4_small.yaml", ckpt, "yolov5", yolov5_env)
    assert stock["stats"] > 0 and len(stock["moved"]) == stock["stats"], stock
    run_cli("revert", "--repo", root, "--force", check=0)
    doc = json.loads(run_cli(*args, "--weights", ckpt, env=yolov5_env, check=0).stdout)
    assert {s["recipe"]: s["status"] for s in doc["steps"]}["stride_probe"] == APPLIED
    kept = backbone_vs_checkpoint(root, "models/yolov5n-mobilenetv4_small.yaml", ckpt, "yolov5", yolov5_env)
    assert kept["stats"] == stock["stats"] and kept["moved"] == []
    run_cli("revert", "--repo", root, check=0)
    assert {k: v for k, v in tree_digest(root).items() if not k.startswith(".mbpatch/")} == before


@pytest.mark.slow
def test_ultralytics_build_keeps_the_loaded_statistics(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.2.103")
    before = tree_digest(repo)
    ckpt = checkpoint(tmp_path, "repvit_m1")
    doc = json.loads(run_cli("apply", "--repo", repo, "--backbone", "repvit_m1", "--arch", "yolov8", "--weights", ckpt,
                             "--json", check=0).stdout)
    assert doc["verification"]["ok"] and {s["recipe"]: s["status"] for s in doc["steps"]}["stride_probe"] == APPLIED
    kept = backbone_vs_checkpoint(repo, "ultralytics/cfg/models/v8/yolov8-repvit_m1.yaml", ckpt, "ultralytics")
    assert kept["stats"] > 0 and kept["moved"] == [], kept
    # doctor judges the step with the journal's --weights
    report = json.loads(run_cli("doctor", "--repo", repo, "--json").stdout)
    assert {r["recipe"]: r["state"] for r in report["recipes"][0]["steps"]}["stride_probe"] == "applied"
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before
