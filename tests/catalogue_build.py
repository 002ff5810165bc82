"""Every backbone of the catalogue inside one detector (RT-DETR or YOLOv8) on the newest Ultralytics in the cache.

Used by tests/test_catalogue_in_rtdetr.py and tests/test_catalogue_in_yolov8.py (two files, so that two xdist
workers build them side by side). All the applies (one per catalogue backbone) stack on one checkout (a stress
test of the journal too); one process then builds each model with the checkout's own code and runs it at 320x320, 320x256, 256x320 and 160x160 in eval mode, and
with batch 2 in eval and in train mode (with a backward pass); finally one revert gives back the original bytes.
The sizes are small (every one a multiple of 32, two not square) because what is checked is the wiring, and the
catalogue has 19 backbones to build in each detector on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import run_cli, tree_digest
from mbpatch.templates import CATALOG

VERSION = "8.4.190"

BUILD_ALL = r"""
import json, sys, yaml, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel


def first(out):  # the first tensor of whatever the detector returns (tensor, tuple, list or dict)
    if isinstance(out, torch.Tensor):
        return out
    for v in (out.values() if isinstance(out, dict) else out):
        t = first(v)
        if t is not None:
            return t


results = {}
for path, kind in json.loads(sys.argv[2]):
    d = yaml.safe_load(open(path))
    if kind == "yolov8":
        d["scale"] = "n"
    cls = RTDETRDetectionModel if kind == "rtdetr" else DetectionModel
    model = cls(d, nc=80, verbose=False)
    shapes = {}
    model.eval()
    with torch.no_grad():
        for h, w in ((320, 320), (256, 320), (320, 256), (160, 160)):
            shapes[f"{w}x{h}"] = list(first(model(torch.zeros(1, 3, h, w))).shape)
        shapes["eval 2x160x160"] = list(first(model(torch.rand(2, 3, 160, 160))).shape)
    model.train()
    out = first(model(torch.rand(2, 3, 160, 160)))
    out.float().sum().backward()  # the training graph reaches the backbone
    grads = [p.grad is not None for p in model.model[0].parameters()]
    shapes["train 2x160x160"] = list(out.shape) + [int(all(grads))]
    results[path] = shapes
print(json.dumps(results))
"""


def every_backbone_builds(ultralytics_checkout, arch: str) -> None:
    repo = ultralytics_checkout(VERSION)
    before = tree_digest(repo)
    models = []
    for bb in CATALOG.values():
        doc = json.loads(run_cli("apply", "--repo", repo, "--backbone", bb.id, "--arch", arch, "--no-verify",
                                 "--json", check=0).stdout)
        yaml_step = [s for s in doc["steps"] if s["recipe"] == "model_yaml"][0]
        models.append((str(repo / yaml_step["detail"]), arch))
    proc = subprocess.run([sys.executable, "-c", BUILD_ALL, str(repo), json.dumps(models)],
                          capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(CATALOG)
    for path, shapes in results.items():
        train = shapes["train 2x160x160"]
        # batch 2 (RT-DETR's training output leads with its 6 decoder layers), every backbone parameter got a gradient
        assert 2 in train[:2] and train[-1] == 1, (path, train)
        if arch == "rtdetr":
            # eval: 300 queries, x1y1x2y2 + score + class (8.4 post-processes in the head); train: decoder boxes
            assert all(s[1] == 300 for k, s in shapes.items() if not k.startswith("train")), (path, shapes)
            assert shapes["eval 2x160x160"][0] == 2, (path, shapes)
        else:  # one prediction per cell of the stride-8/16/32 grids, 4 box + 80 class channels
            assert shapes.pop("eval 2x160x160") == [2, 84, 20 * 20 + 10 * 10 + 5 * 5], (path, shapes)
            for key, s in shapes.items():
                if key.startswith("train"):
                    continue
                w, h = map(int, key.split("x"))
                cells = sum((w // st) * (h // st) for st in (8, 16, 32))
                assert s == [1, 84, cells], (path, key, s)
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before
