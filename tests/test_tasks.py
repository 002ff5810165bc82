"""Every model family and task (issue 9): YOLO26, YOLO12, YOLO11, YOLOv8, RT-DETR x detect, segment, pose, obb,
classify (+ YOLO26 semantic and depth), on the real sources of 8.4.190 and of the releases each family arrived in.

Per checkout: every (family, task) pair is applied with a different backbone in rotation (the applies stack), then
ONE child process with the checkout first on sys.path builds each stock and patched model with the checkout's own
model class for the task and runs it at 640x480, batch 2, in train and in eval mode. The patched model must give
outputs of the same structure and shapes as the stock model of that family, task and scale (boxes, masks,
keypoints, angles, class scores); a few shapes are also checked against numbers worked out by hand. Then
`mbpatch revert` must give back the exact bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import run_cli, tree_digest, unpacked

from mbpatch.templates import AVAILABLE

# the catalogue in rotation, less its four heaviest (hybrid_large, large, repvit_m1_5, m2_3: built in other tests)
HEAVY = ("mobilenetv4_hybrid_large", "mobilenetv4_large", "repvit_m1_5", "repvit_m2_3")
# (MobileNetV2's wide-tap variants are left out: the same blocks as their thin bases, built in test_wide_taps.py and
# test_catalogue_in_rtdetr.py / _yolov8.py; in the rotation they would move every other backbone to another pair)
BACKBONES = [b for b in sorted(AVAILABLE) if b not in HEAVY and not b.endswith("_wide")]
NEWEST = "8.4.190"
PAIRS_NEWEST = [
    (arch, task) for arch, tasks in (
        ("yolov8", ("detect", "segment", "pose", "obb", "classify")),
        ("yolo11", ("detect", "segment", "pose", "obb", "classify")),
        ("yolo12", ("detect", "segment", "pose", "obb", "classify")),
        ("yolo26", ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")),
    ) for task in tasks
] + [("rtdetr", "detect")]
# the release each family arrived in, and one in the middle of each family's life (families.py has the survey)
# (the tasks rotate over the releases so that each family's tasks are all built in some older release)
OLDER = {
    "8.3.0": [("yolo11", "detect"), ("yolo11", "pose"), ("yolo11", "classify")],
    "8.3.78": [("yolo12", "detect"), ("yolo12", "segment"), ("yolo12", "obb")],
    "8.4.0": [("yolo26", "segment"), ("yolo26", "pose"), ("yolo26", "obb")],
    "8.3.100": [("yolo11", "segment"), ("yolo11", "obb"), ("yolo12", "pose"), ("yolo12", "classify")],
    "8.4.104": [("yolo26", "detect"), ("yolo26", "classify"), ("yolo26", "semantic"), ("yolo26", "depth")],
}
# cheap (small, fast) backbones for the older releases, where only eval-mode forwards are run
LIGHT = ("mobilenetv4_small", "repvit_m0_9", "mobilenetv2", "mobilenetv4_medium", "repvit_m1")

BUILD = r"""
import json, sys
root, jobs, both = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
sys.path.insert(0, root)
sys.dont_write_bytecode = True
import torch, yaml
from ultralytics.nn import tasks
assert tasks.__file__.startswith(root), tasks.__file__

def shapes(o):
    if isinstance(o, torch.Tensor):
        return list(o.shape)
    if isinstance(o, (list, tuple)):
        return [shapes(x) for x in o]
    if isinstance(o, dict):
        return {k: shapes(v) for k, v in o.items()}
    return type(o).__name__

def load(rel, scale):
    d = yaml.safe_load(open(f"{root}/{rel}", encoding="utf-8"))
    d["scale"], d["yaml_file"] = scale, rel
    return d

out = {}
torch.manual_seed(0)
for key, stock, patched, cls, scale, nc in jobs:
    try:
        res = {"guess": tasks.guess_model_task(load(patched, scale))}
        for name, rel in (("stock", stock), ("patched", patched)):
            model = getattr(tasks, cls)(load(rel, scale), nc=nc, verbose=False)
            r = {"params": sum(p.numel() for p in model.parameters()), "type": type(model).__name__,
                 "first": type(model.model[0]).__name__}
            x = torch.zeros(2, 3, 480, 640)
            if both:
                model.train()
                r["train"] = shapes(model(x))
            model.eval()
            with torch.no_grad():
                r["eval"] = shapes(model(x))
            res[name] = r
            del model
        out[key] = res
    except Exception as e:
        import traceback
        out[key] = {"error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
print("@@BUILT@@" + json.dumps(out))
"""


def build_all(root, jobs, both=True):
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", BUILD, str(root), json.dumps(jobs), "1" if both else "0"],
                          capture_output=True, text=True, cwd=root, env=env, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@BUILT@@")]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("@@BUILT@@"):])


def apply_pairs(root, pairs, backbones):
    """Apply each pair (stacked) with --no-verify; returns {(arch, task): (backbone, target doc)}."""
    done = {}
    for k, (arch, task) in enumerate(pairs):
        bb = backbones[k % len(backbones)]
        scale = ("x" if task.endswith("-x") else "l") if arch == "rtdetr" else "n"
        proc = run_cli("apply", "--repo", root, "--backbone", bb, "--arch", arch, "--task", task.split("-")[0], "--scale", scale,
                       "--no-verify", "--json", check=0)
        doc = json.loads(proc.stdout)
        yamls = [c for c in doc["changed"] if c.endswith(".yaml")]
        assert len(yamls) == 1, (arch, task, doc["changed"])
        done[(arch, task)] = (bb, yamls[0])
    return done


MODEL = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel",
         "classify": "ClassificationModel", "semantic": "SemanticSegmentationModel", "depth": "DepthModel"}
STEM = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb", "classify": "-cls", "semantic": "-sem",
        "depth": "-depth"}
FOLDER = {"yolov8": "v8", "yolo11": "11", "yolo12": "12", "yolo26": "26", "rtdetr": "rt-detr"}


def jobs_for(root, applied):
    jobs = []
    for (arch, task), (bb, rel) in applied.items():
        scale = ("x" if task.endswith("-x") else "l") if arch == "rtdetr" else "n"
        cls = "RTDETRDetectionModel" if arch == "rtdetr" else MODEL[task]
        stock = f"ultralytics/cfg/models/{FOLDER[arch]}/" + (f"rtdetr-{scale}" if arch == "rtdetr" else arch + STEM[task]) + ".yaml"
        assert rel == stock[: -len(".yaml")] + f"-{bb}.yaml", (rel, stock)  # <stock stem>-<backbone id>.yaml
        nc = yaml.safe_load((root / rel).read_text())["nc"]
        jobs.append((f"{arch}/{task}", stock, rel, cls, scale, nc))
    return jobs


def check_built(built, applied, modes):
    for (arch, task), (bb, rel) in applied.items():
        r = built[f"{arch}/{task}"]
        assert "error" not in r, (arch, task, bb, r)
        # what the checkout's YOLO(...) will train (its guess has no rule for RTDETRDecoder; RTDETR(...) says detect)
        assert r["guess"] == (None if arch == "rtdetr" else task.split("-")[0])
        s, p = r["stock"], r["patched"]
        assert p["type"] == s["type"] and p["first"] != s["first"], (arch, task, bb)  # our backbone at layer 0
        for mode in modes:
            assert p[mode] == s[mode], (arch, task, bb, mode, s[mode], p[mode])


@pytest.fixture(scope="module")
def newest(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks") / f"ultralytics-{NEWEST}"
    import shutil

    shutil.copytree(unpacked("ultralytics", NEWEST, "ultralytics"), root)
    before = tree_digest(root)
    applied = apply_pairs(root, PAIRS_NEWEST, BACKBONES)
    built = build_all(root, jobs_for(root, applied))
    return root, before, applied, built


@pytest.mark.slow
def test_every_family_and_task_builds_like_stock(newest):
    root, _, applied, built = newest
    assert len({bb for bb, _ in applied.values()}) == len(BACKBONES)  # every backbone of the rotation is used
    check_built(built, applied, ("train", "eval"))
    # shapes worked out by hand for nc=80 at 640x480: 80*60 + 40*30 + 20*15 = 6300 anchor points
    ev = {k: v["patched"]["eval"] for k, v in built.items()}
    assert ev["yolov8/detect"][0] == [2, 84, 6300]  # boxes + 80 class scores
    assert ev["yolo11/pose"][0] == [2, 4 + 80 + 17 * 3, 6300]  # + 17 keypoints (x, y, visible)
    assert ev["yolo12/obb"][0] == [2, 4 + 80 + 1, 6300]  # + the angle
    assert has(ev["yolov8/segment"], [2, 32, 120, 160])  # 32 mask prototypes at stride 4
    for arch in ("yolov8", "yolo11", "yolo12", "yolo26"):
        assert has(ev[f"{arch}/classify"], [2, 1000])  # class scores: --nc defaults to the stock classify yaml's 1000
    assert ev["rtdetr/detect"][0] == [2, 300, 4 + 1 + 1]  # 300 queries, decoded by 8.4.190: box, score, class


def has(shapes, shape) -> bool:
    """Whether a tensor of `shape` is anywhere in a nested output."""
    if shapes == shape:
        return True
    items = shapes.values() if isinstance(shapes, dict) else shapes if isinstance(shapes, list) else []
    return any(isinstance(x, (list, dict)) and has(x, shape) for x in items)


def test_generated_yaml_reads_the_checkouts_own_head(newest):
    root, _, applied, _ = newest
    d = yaml.safe_load((root / applied[("yolo26", "segment")][1]).read_text())
    stock = yaml.safe_load((root / "ultralytics/cfg/models/26/yolo26-seg.yaml").read_text())
    assert d["end2end"] is True and d["reg_max"] == 1 and d["head"][-1][2] == "Segment26"
    assert [r[2] for r in d["backbone"][1:]] == ["SPPF", "C2PSA"]  # kept after the stride-32 stage
    assert [r[1:] for r in d["head"]] == [r[1:] for r in stock["head"]]  # the head itself unchanged, only `from`
    assert d["head"][-1][0] == [12, 15, 18]  # stock [16, 19, 22] with 11 backbone rows -> 1 + 2 kept: -4
    y12 = yaml.safe_load((root / applied[("yolo12", "detect")][1]).read_text())
    assert len(y12["backbone"]) == 1 and y12["head"][1][0] == [-1, 3]  # no SPPF/C2PSA; stride 16 is slot 3
    cls = yaml.safe_load((root / applied[("yolo11", "classify")][1]).read_text())
    assert len(cls["backbone"]) == 1 and cls["head"] == [[-1, 1, "Classify", ["nc"]]]


def test_rtdetr_scale_x_takes_the_rtdetr_x_neck(newest):
    root = newest[0]
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "rtdetr", "--scale", "x",
                   "--no-verify", "--json", check=0)
    rel = [c for c in json.loads(proc.stdout)["changed"] if c.endswith(".yaml")]
    assert rel == ["ultralytics/cfg/models/rt-detr/rtdetr-x-mobilenetv4_small.yaml"]
    d = yaml.safe_load((root / rel[0]).read_text())
    stock = yaml.safe_load((root / "ultralytics/cfg/models/rt-detr/rtdetr-x.yaml").read_text())
    assert [r[1:] for r in d["head"]] == [r[1:] for r in stock["head"]]  # rtdetr-x's 384-wide neck, AIFI 2048
    # stock input projections read HGNet-x rows 10 (stride 16) and 4 (stride 8): now backbone slots 3 and 2
    assert [r[0] for r in d["head"] if r[2] == "Conv" and r[3][1:2] == [1] and len(r[3]) > 3] == [-1, 3, 2]
    assert d["head"][-1][0] == [16, 19, 22] and list(d["scales"]) == ["x"]


def test_revert_gives_back_every_byte(newest):
    root, before, _, _ = newest
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == before


@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(OLDER, key=lambda v: tuple(map(int, v.split(".")))))
def test_older_releases(version, ultralytics_checkout):
    root = ultralytics_checkout(version)
    before = tree_digest(root)
    applied = apply_pairs(root, OLDER[version], LIGHT)
    built = build_all(root, jobs_for(root, applied), both=False)
    check_built(built, applied, ("eval",))
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == before


REFUSED = [
    ("8.3.253", "yolo26", "detect", "arch", "8.4.0"),
    ("8.3.0", "yolo12", "segment", "arch", "8.3.78"),
    ("8.4.0", "yolo26", "depth", "task", "8.4.104"),
    ("8.4.0", "yolo26", "semantic", "task", "8.4.52"),
    ("8.4.190", "rtdetr", "pose", "task", None),
]


@pytest.mark.parametrize("version,arch,task,step,since", REFUSED)
def test_missing_arch_or_task_is_refused_up_front(version, arch, task, step, since, ultralytics_checkout):
    root = ultralytics_checkout(version)
    before = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", arch, "--task", task, "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["step"] == step, doc
    assert (since in doc["error"]) if since else ("has no pose task" in doc["error"]), doc["error"]
    assert "Traceback" not in proc.stderr and tree_digest(root) == before
