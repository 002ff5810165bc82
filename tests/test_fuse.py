"""The `fuse` recipes: the checkout's own `model.fuse()` folds mbpatch's backbone too; and the gradient check.

On real sources (Ultralytics 8.4.190 and 8.1.20, YOLOv5 7.0.14 in the git layout) a script that knows nothing
of mbpatch builds each patched model the way a user does, gives every BatchNorm non-trivial statistics and
every layer scale a non-trivial value, and compares the eval-mode outputs before and after the checkout's
own `model.fuse()`. Tolerance: every output tensor within 1e-4 x max(1, its largest magnitude) (float32;
the measured error is about 1e-6 relative); for RT-DETR the maps its decoder receives are compared, since
its top-k query selection may swap two near-equal queries. After fusing, the backbone of a conv network holds no
BatchNorm2d, RepViT's token mixers are single depthwise convs, and a second `fuse()` changes no tensor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli, tree_digest, unpacked
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)

from mbpatch.recipes import ALREADY, APPLIED, NOT_NEEDED, RecipeError, parse
from mbpatch.recipes.fuse_backbone import add_fuse_hook

torch = pytest.importorskip("torch")

CATALOGUE = ["mobilenetv2", "mobilenetv2_075", "mobilenetv2_050", "mobilenetv4_small", "mobilenetv4_medium", "mobilenetv4_large",
             "mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_large", "repvit_m1", "repvit_m2", "repvit_m3",
             "repvit_m0_9", "repvit_m1_0", "repvit_m1_1", "repvit_m1_5", "repvit_m2_3"]
TOL = 1e-4  # the maps the head receives (relative to max(1, |map|))
OUTPUT_TOL = 2e-3  # the detector's outputs, after the head amplifies the maps' float32 rounding (see FUSE_CHECK)

# Run by the checkout's interpreter with its root first on sys.path. argv: root, kind, json [[label, yaml]].
FUSE_CHECK = r'''
import importlib, importlib.util, json, os, sys
root, kind, cfgs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, root)
import torch, yaml
torch.set_num_threads(1)
torch.manual_seed(0)  # the models' initial weights: the same run every time
spec = importlib.util.spec_from_file_location("verify_child", sys.argv[4])
verify_child = importlib.util.module_from_spec(spec); spec.loader.exec_module(verify_child)

def build(path):
    if kind == "yolov5":
        Model = importlib.import_module("models.yolo").Model
        return Model(path, ch=3, nc=80), len(yaml.safe_load(open(path))["backbone"])
    tasks = importlib.import_module("ultralytics.nn.tasks")
    d = yaml.safe_load(open(path))
    d["scale"] = "n" if "n" in d.get("scales", {}) else next(iter(d.get("scales", {"": 0})))
    cls = tasks.RTDETRDetectionModel if "rtdetr" in os.path.basename(path) else tasks.DetectionModel
    return cls(d, nc=80, verbose=False), len(d["backbone"])

def tensors(o):
    if isinstance(o, torch.Tensor):
        return [o]
    if isinstance(o, dict):
        o = list(o.values())
    return [t for v in (o if isinstance(o, (list, tuple)) else []) for t in tensors(v)]

def worst(a, b):
    return max(float((x - y).abs().max()) / max(1.0, float(x.abs().max())) for x, y in zip(a, b))

out = {}
g = torch.Generator().manual_seed(0)
for label, path in cfgs:
    model, n_backbone = build(path)
    rec = {"gradient": verify_child._gradient_check(model, n_backbone)}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
    model.eval()
    x = torch.rand(1, 3, 160, 128, generator=g)  # RT-DETR needs 300 anchors
    backbone = model.model[:n_backbone]
    head_inputs = []
    model.model[-1].register_forward_pre_hook(lambda mod, args: head_inputs.append([t.clone() for t in tensors(args)]))
    with torch.no_grad():
        before = [t.clone() for t in tensors(model(x))]
        rec["bn_before"] = sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
        model.fuse()
        after = tensors(model(x))
        # Judged on the maps the head receives: everything the backbone's fold changes is before them. The
        # random weights and statistics make those maps ~1e6 in size, and a YOLO head's own folded convs and
        # DFL softmax turn their float32 rounding (~3e-6 relative) into up to ~3e-4 on its outputs, so the
        # outputs get a looser bound; RT-DETR's decoder picks its 300 queries by top-k, where a 1e-6 change
        # may swap two near-equal ones, so its outputs are not compared.
        rec["error"] = worst(head_inputs[0], head_inputs[-1])  # fuse() runs its own FLOPs passes between
        rec["output_error"] = 0.0 if "rtdetr" in label else worst(before, after)
        rec["bn_after"] = sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
        rec["classes_after"] = sorted({type(m).__name__ for m in backbone.modules()})
        mixers = [m.token_mixer for m in backbone.modules() if hasattr(m, "token_mixer")]
        rec["token_mixers"] = sorted({type(t).__name__ for t in mixers})
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.fuse()
        again = model.state_dict()
        rec["twice_same"] = state.keys() == again.keys() and all(torch.equal(v, again[k]) for k, v in state.items())
        rec["twice_error"] = worst(after, tensors(model(x)))
    out[label] = rec
print("@@RESULT@@" + json.dumps(out))
'''


def fuse_check(root: Path, kind: str, cfgs, env=None) -> dict:
    full = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {})}
    full.pop("PYTHONPATH", None)
    child = REPO / "patcher" / "verify_child.py"
    jobs = json.dumps([[label, str(path)] for label, path in cfgs])
    proc = subprocess.run([sys.executable, "-c", FUSE_CHECK, str(root), kind, jobs, str(child)],
                          capture_output=True, text=True, cwd=str(root), env=full, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise AssertionError(f"fuse check failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def apply(repo, *args, env=None):
    doc = json.loads(run_cli("apply", "--repo", repo, *args, "--no-verify", "--json", env=env, check=0).stdout)
    return {s["recipe"]: s["status"] for s in doc["steps"]}


def assert_folded(label: str, rec: dict):
    assert rec["gradient"]["params"] > 0 and rec["gradient"]["unused"] == [], (label, rec["gradient"])
    assert rec["error"] <= TOL, (label, rec["error"])
    assert rec["output_error"] <= OUTPUT_TOL, (label, rec["output_error"])
    assert rec["bn_before"] > 0, label
    if "hybrid" in label:  # only the attention pre-norms before a strided depthwise conv stay (not exact)
        assert rec["bn_after"] == 4, (label, rec["bn_after"])
    else:
        assert rec["bn_after"] == 0, (label, rec["classes_after"])
    if "repvit" in label:
        assert rec["token_mixers"] == ["Conv2d"], (label, rec["token_mixers"])
        assert not {"ConvNorm", "RepVggDw"} & set(rec["classes_after"]), label
    assert rec["twice_same"] and rec["twice_error"] == 0.0, label


# --- the edit itself, on every cached release ---------------------------------------------------------------

ULTRALYTICS = ["8.0.0", "8.0.50", "8.0.200", "8.1.20", "8.2.103", "8.3.40", "8.3.253", "8.4.190"]


@pytest.mark.parametrize("version", ULTRALYTICS)
def test_fuse_hook_placed_before_the_stock_loop(version):
    text = (unpacked("ultralytics", version, "ultralytics") / "ultralytics" / "nn" / "tasks.py").read_text()
    new, status, _ = add_fuse_hook(parse(text), ("BaseModel",))
    assert status == APPLIED
    code = new.code
    compile(code, "tasks.py", "exec")
    fuse = code[code.index("    def fuse("):]
    hook = fuse.index('if hasattr(m, "reparameterize"):')
    stock = fuse.index("for m in self.model.modules():")
    assert hook < stock and "for m in list(self.model.modules()):" in fuse[:hook]
    # outside BaseModel.fuse the file is unchanged, and a second pass changes nothing
    assert len(code.splitlines()) == len(text.splitlines()) + 3
    assert add_fuse_hook(new, ("BaseModel",))[1] == ALREADY


@pytest.mark.parametrize("version", ["6.0.7", "7.0.14"])
def test_fuse_hook_in_yolov5(version):
    text = (unpacked("yolov5", version, "yolov5") / "yolov5" / "models" / "yolo.py").read_text()
    new, status, detail = add_fuse_hook(parse(text), ("BaseModel", "Model"))
    assert status == APPLIED and detail.startswith("Model" if version == "6.0.7" else "BaseModel")
    compile(new.code, "yolo.py", "exec")
    assert len(new.code.splitlines()) == len(text.splitlines()) + 3
    assert add_fuse_hook(new, ("BaseModel", "Model"))[1] == ALREADY


def test_fuse_hook_not_needed_without_fuse_and_refused_without_its_loop():
    trimmed = (Path(__file__).parent / "fixtures" / "yolov5_master_yolo.py").read_text()  # has no fuse()
    assert add_fuse_hook(parse(trimmed), ("BaseModel", "Model"))[1] == NOT_NEEDED
    rewritten = "class BaseModel:\n    def fuse(self):\n        return self\n"
    with pytest.raises(RecipeError, match="no `for m in self.model.modules\\(\\):` loop"):
        add_fuse_hook(parse(rewritten), ("BaseModel",))


# --- the checkout's own fuse() on built models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def u84_all(tmp_path_factory):
    """Ultralytics 8.4.190 with every catalogue backbone applied (yolov8), plus one RT-DETR."""
    import shutil

    repo = tmp_path_factory.mktemp("fuse") / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), repo)
    before = tree_digest(repo)
    for k, bid in enumerate(CATALOGUE):
        steps = apply(repo, "--backbone", bid, "--arch", "yolov8")
        assert steps["fuse"] == (APPLIED if k == 0 else ALREADY), steps
    assert apply(repo, "--backbone", "repvit_m1", "--arch", "rtdetr")["fuse"] == ALREADY
    return repo, before


@pytest.mark.slow
def test_fuse_every_backbone_in_ultralytics_8_4(u84_all):
    repo, before = u84_all
    v8 = repo / "ultralytics/cfg/models/v8"
    cfgs = [(bid, v8 / f"yolov8-{bid}.yaml") for bid in CATALOGUE]
    cfgs.append(("rtdetr-repvit_m1", repo / "ultralytics/cfg/models/rt-detr/rtdetr-l-repvit_m1.yaml"))
    result = fuse_check(repo, "ultralytics", cfgs)
    for label, rec in result.items():
        assert_folded(label, rec)
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before


@pytest.mark.slow
def test_fuse_in_ultralytics_8_1(ultralytics_checkout):
    repo = ultralytics_checkout("8.1.20")
    assert apply(repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8")["fuse"] == APPLIED
    assert apply(repo, "--backbone", "repvit_m0_9", "--arch", "rtdetr")["fuse"] == ALREADY
    result = fuse_check(repo, "ultralytics", [
        ("mobilenetv4_small", repo / "ultralytics/cfg/models/v8/yolov8-mobilenetv4_small.yaml"),
        ("rtdetr-repvit_m0_9", repo / "ultralytics/cfg/models/rt-detr/rtdetr-l-repvit_m0_9.yaml"),
    ])
    for label, rec in result.items():
        assert_folded(label, rec)


@pytest.mark.slow
def test_fuse_in_yolov5_git_both_styles_and_tutorial_flag(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    before = tree_digest(root)
    assert apply(root, "--backbone", "repvit_m1", "--arch", "yolov5", env=yolov5_env)["fuse"] == APPLIED
    assert apply(root, "--backbone", "mobilenetv2", "--arch", "yolov5", "--style", "blocks",
                 env=yolov5_env)["fuse"] == ALREADY
    # the RepViT tutorial's own row passes its `pretrained` flag: `[-1, 1, repvit_m1, [False]]`
    ours = (root / "models/yolov5n-repvit_m1.yaml").read_text()
    row = re.compile(r"\[-1, 1, RepViTM1, \[\]\]")
    assert row.search(ours), ours
    tutorial = root / "models/yolov5n-repvit-tutorial.yaml"
    tutorial.write_text(row.sub("[-1, 1, repvit_m1, [False]]", ours))
    result = fuse_check(root, "yolov5", [
        ("repvit_m1", root / "models/yolov5n-repvit_m1.yaml"),
        ("repvit_m1-tutorial-flag", tutorial),
        ("mobilenetv2-blocks", root / "models/yolov5-mobilenetv2-blocks.yaml"),
    ], env=yolov5_env)
    for label, rec in result.items():
        assert_folded(label, rec)
    tutorial.unlink()
    run_cli("revert", "--repo", root, check=0, env=yolov5_env)
    assert tree_digest(root) == before


# --- --weights survive fusing ----------------------------------------------------------------------------------

WEIGHTS_CHECK = r'''
import sys, yaml, torch
root, cfg, out = sys.argv[1:4]
sys.path.insert(0, root)
from ultralytics.nn.tasks import DetectionModel
d = yaml.safe_load(open(cfg)); d["scale"] = "n"
model = DetectionModel(d, nc=80, verbose=False).eval()
model.fuse()
x = torch.load(out + ".in")
with torch.no_grad():
    torch.save([t.clone() for t in model.model[0](x)], out)
'''


@pytest.mark.slow
def test_weights_survive_fusing(ultralytics_checkout, tmp_path):
    timm = pytest.importorskip("timm")
    repo = ultralytics_checkout("8.4.190")
    full = timm.create_model("repvit_m1", pretrained=False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics a fresh build would never have, so only a loaded checkpoint explains them
        for m in full.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    state = full.state_dict()
    ckpt = tmp_path / "repvit_m1.pth"
    torch.save(state, ckpt)
    reference = timm.create_model("repvit_m1", pretrained=False, features_only=True).eval()
    # timm's feature wrapper spells `stages.0.` as `stages_0.`
    reference.load_state_dict({k: state[re.sub(r"^stages_(\d+)\.", r"stages.\1.", k)] for k in reference.state_dict()})
    apply(repo, "--backbone", "repvit_m1", "--arch", "yolov8", "--weights", ckpt)
    x = torch.rand(1, 3, 128, 160, generator=g)
    out = tmp_path / "maps.pt"
    torch.save(x, str(out) + ".in")
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    cfg = repo / "ultralytics/cfg/models/v8/yolov8-repvit_m1.yaml"
    proc = subprocess.run([sys.executable, "-c", WEIGHTS_CHECK, str(repo), str(cfg), str(out)],
                          capture_output=True, text=True, cwd=repo, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fused = torch.load(out)
    with torch.no_grad():
        by_stride = dict(zip(reference.feature_info.reduction(), reference(x)))
    expected = [by_stride[s] for s in (4, 8, 16, 32)]
    assert len(fused) == 4
    for a, b in zip(fused, expected):
        assert a.shape == b.shape and float((a - b).abs().max()) <= TOL * max(1.0, float(b.abs().max()))


# --- the gradient check of every verification --------------------------------------------------------------------


@pytest.mark.slow
def test_gradient_check_names_an_unused_backbone_parameter(ultralytics_checkout):
    repo = ultralytics_checkout("8.4.190")
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--no-verify", check=0)
    template = repo / "ultralytics/nn/AddModules/mobilenetv4.py"
    text = template.read_text()
    anchor = "        self.channel = self.width_list\n"
    assert text.count(anchor) == 1
    template.write_text(text.replace(anchor, anchor + "        self.spare = nn.Parameter(torch.zeros(3))\n"))
    proc = run_cli("verify", "--repo", repo, "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert not doc["verification"]["ok"]
    assert "got no gradient" in doc["verification"]["error"] and "model.0.spare" in doc["verification"]["error"]
    template.write_text(text)  # without it the same checkout verifies
    doc = json.loads(run_cli("verify", "--repo", repo, "--json", check=0).stdout)
    grad = doc["verification"]["patched"]["gradient"]
    assert doc["verification"]["ok"] and grad["unused"] == [] and grad["params"] > 100
