"""optimizer_groups on real sources: every backbone parameter reaches the optimizer.

YOLOv5 v6.0-v6.2 (PyPI 6.0.1-6.2.2) and Ultralytics up to 8.0.109 group parameters by the
attribute names `weight` and `bias` only, so the learnable layer scale (`gamma`) of the MobileNetV4 hybrids
would never be trained. The checks run the checkout's own grouping code on the model the checkout builds.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest, unpacked
from conftest_yolov5 import VERSIONS, make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)
from mbpatch.checkout import detect
from mbpatch.recipes import ALREADY, APPLIED, NOT_NEEDED, Context
from mbpatch.recipes.ultralytics.optimizer_groups import OptimizerGroups as UltralyticsOptimizerGroups
from mbpatch.recipes.yolov5.optimizer_groups import OptimizerGroups
from mbpatch.templates import lookup

# YOLOv5 6.1.9: smart_optimizer(model, ...) in utils/torch_utils.py; Ultralytics 8.0.x: the static
# BaseTrainer.build_optimizer(model, ...). Both callable as they are.
SMART = r"""
import sys, json, torch, yaml
sys.path.insert(0, sys.argv[1])
ultralytics = sys.argv[3] == "ultralytics"
if ultralytics:
    from ultralytics.yolo.engine.trainer import BaseTrainer
    smart_optimizer = BaseTrainer.build_optimizer
else:
    from utils.torch_utils import smart_optimizer
if sys.argv[2] == "toy":  # a layer scale, as in the hybrids, next to a conv
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = torch.nn.Parameter(torch.ones(8))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), Scale())
elif ultralytics:
    from ultralytics.nn.tasks import DetectionModel
    d = yaml.safe_load(open(sys.argv[2])); d["depth_multiple"], d["width_multiple"] = 0.33, 0.25
    model = DetectionModel(d, nc=80, verbose=False)
else:
    from models.yolo import Model
    model = Model(sys.argv[2], ch=3, nc=80)
opt = smart_optimizer(model, "SGD", 0.01, 0.9, 5e-4)
grouped = {id(p) for g in opt.param_groups for p in g["params"]}
names = [n for n, p in model.named_parameters() if id(p) not in grouped]
print(json.dumps({"params": len(list(model.parameters())), "left_out": names}))
"""


def run_smart(root, cfg, env, kind="yolov5"):
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", SMART, str(root), cfg, kind], capture_output=True, text=True,
                          cwd=root, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_layer_scale_is_trained_on_6_1_9(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "6.1.9")
    before = tree_digest(root)
    assert run_smart(root, "toy", yolov5_env)["left_out"] == ["1.gamma"]  # the stock grouping drops it
    doc = json.loads(run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_hybrid_medium", "--arch", "yolov5",
                             "--no-verify", "--json", env=yolov5_env, check=0).stdout)
    assert {s["recipe"]: s["status"] for s in doc["steps"]}["optimizer_groups"] == APPLIED
    assert run_smart(root, "toy", yolov5_env)["left_out"] == []
    real = run_smart(root, "models/yolov5n-mobilenetv4_hybrid_medium.yaml", yolov5_env)
    assert real["params"] > 0 and real["left_out"] == []
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == before


@pytest.mark.slow
def test_layer_scale_is_trained_on_ultralytics_8_0_50(ultralytics_checkout):
    root = ultralytics_checkout("8.0.50")
    before = tree_digest(root)
    assert run_smart(root, "toy", {}, "ultralytics")["left_out"] == ["1.gamma"]  # the stock grouping drops it
    doc = json.loads(run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_hybrid_medium", "--arch", "yolov8",
                             "--no-verify", "--json", check=0).stdout)
    assert {s["recipe"]: s["status"] for s in doc["steps"]}["optimizer_groups"] == APPLIED
    assert run_smart(root, "toy", {}, "ultralytics")["left_out"] == []
    yaml_step = [s for s in doc["steps"] if s["recipe"] == "model_yaml"][0]
    real = run_smart(root, yaml_step["detail"], {}, "ultralytics")
    assert real["params"] > 0 and real["left_out"] == []
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == before


def check_placed_or_not_needed(recipe, ctx, placed: bool) -> dict:
    """Run the recipe on the checkout's files: placed (two statements added, every original line kept, then
    "already applied"), or not needed and nothing changed. Returns the files' texts."""
    texts = {rel: ctx.checkout.read(rel) for rel in recipe.targets(ctx)}
    out = recipe.run(ctx, texts)
    if not placed:
        assert out.status == NOT_NEEDED and not out.changes, out
        return texts
    assert out.status == APPLIED and out.changes, out
    for rel, new in out.changes.items():
        old_lines, new_lines = texts[rel].splitlines(), new.splitlines()
        assert len(new_lines) == len(old_lines) + 2 and all(ln in new_lines for ln in old_lines)
    assert recipe.run(ctx, {**texts, **out.changes}).status == ALREADY
    return texts


@pytest.mark.parametrize("version", ["8.0.0", "8.0.50", "8.0.120", "8.1.20", "8.4.190"])
def test_ultralytics_placed_or_not_needed(version):
    co = detect(str(unpacked("ultralytics", version, "ultralytics")))
    ctx = Context(co, lookup("mobilenetv4_hybrid_medium"), "yolov8")
    # 8.0.110 on walks named_parameters(recurse=False) itself
    check_placed_or_not_needed(UltralyticsOptimizerGroups(), ctx, placed=version in ("8.0.0", "8.0.50"))


def grouping_code(text):
    """The statements of train() from `g0, g1, g2 = [], [], []` to the last one before the optimizer is made."""
    train = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == "train")
    body = train.body
    start = next(k for k, s in enumerate(body) if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "(g0, g1, g2)")
    end = next(k for k in range(start, len(body)) if isinstance(body[k], ast.If))  # `if opt.adam:`
    return ast.unparse(ast.Module(body=body[start:end], type_ignores=[]))


def test_layer_scale_is_trained_on_6_0_7(tmp_path):
    torch = pytest.importorskip("torch")
    root = make_git(tmp_path / "yolov5", "6.0.7")
    co = detect(str(root))
    ctx = Context(co, lookup("mobilenetv4_hybrid_large"), "yolov5")
    recipe = OptimizerGroups()
    texts = {rel: co.read(rel) for rel in recipe.targets(ctx)}
    out = recipe.run(ctx, texts)
    assert out.status == APPLIED and list(out.changes) == ["train.py"]
    scale = torch.nn.Module()
    scale.gamma = torch.nn.Parameter(torch.ones(4))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), scale)
    for text, missing in ((texts["train.py"], 1), (out.changes["train.py"], 0)):
        scope = {"model": model, "nn": torch.nn}
        exec(grouping_code(text), scope)  # the checkout's own statements
        grouped = {id(p) for g in ("g0", "g1", "g2") for p in scope[g]}
        assert sum(id(p) not in grouped for p in model.parameters()) == missing
    assert recipe.run(ctx, {**texts, **out.changes}).status == ALREADY


@pytest.mark.parametrize("version", VERSIONS)
def test_placed_or_not_needed(version, tmp_path):
    co = detect(str(make_git(tmp_path / "yolov5", version)))
    ctx = Context(co, lookup("mobilenetv4_hybrid_medium"), "yolov5")
    recipe = OptimizerGroups()
    # PyPI 6.2.3 (v7.0 code) on walks named_parameters(recurse=0) itself
    texts = check_placed_or_not_needed(recipe, ctx, placed=version in ("6.0.7", "6.1.9"))
    ctx.style = "blocks"
    assert recipe.run(ctx, texts).status == NOT_NEEDED
