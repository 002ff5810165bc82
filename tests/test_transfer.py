"""`apply --transfer STOCK.pt` on Ultralytics 8.4.190: a stock yolov8n checkpoint the test builds and saves (random,
seeded: no download), its neck/head tensors copied into the patched model's start file, and a training run that
starts from them (the trainer rebuilds the model from the yaml; the copy must survive that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli, tree_digest

torch = pytest.importorskip("torch")

MAKE_STOCK = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
from ultralytics.nn.tasks import DetectionModel
torch.manual_seed(0)
m = DetectionModel("yolov8n.yaml", nc=2, verbose=False)  # the generated dataset's 2 classes
for p in m.parameters():  # not the init values: a copy must be a copy
    p.data.normal_(0, 0.1)
torch.save({"model": m, "train_args": {}}, sys.argv[2])
"""

# Opens the start file and the stock file; trains one epoch from YOLO(yaml).load(start) and records the model the
# trainer holds when training starts; prints what equals the stock checkpoint.
CHECK = r"""
import json, sys, torch
root, yaml_name, start, stock, data = sys.argv[1:6]
sys.path.insert(0, root)
from ultralytics import YOLO
S = torch.load(stock, map_location="cpu", weights_only=False)["model"]
P = torch.load(start, map_location="cpu", weights_only=False)["model"]
off = len(S.model) - (len(P.model) - 1)
def equal_tensors(model):
    n = 0
    for j in range(1, len(model.model)):
        src = S.model[off + j - 1].state_dict()
        for k, v in model.model[j].state_dict().items():
            n += int(k in src and src[k].shape == v.shape and torch.equal(v.float(), src[k].float()))
    return n
detect_equal = all(torch.equal(v, S.model[-1].state_dict()[k]) for k, v in P.model[-1].state_dict().items())
seen = {}
model = YOLO(yaml_name).load(start)
model.add_callback("on_train_start", lambda tr: seen.setdefault("equal", equal_tensors(tr.model)))
model.train(data=data, epochs=1, imgsz=32, batch=4, workers=0, device="cpu", plots=False, val=False, amp=False,
            project=sys.argv[6], name="t", exist_ok=True, verbose=False)
print("RESULT", json.dumps({"in_file": equal_tensors(P), "detect_equal": detect_equal, "at_train_start": seen.get("equal")}))
"""


@pytest.mark.slow
def test_transfer_from_a_stock_checkpoint_is_kept_by_the_trainer(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "yolo-config")
    env["YOLO_OFFLINE"] = "1"
    stock = tmp_path / "yolov8n.pt"
    subprocess.run([sys.executable, "-c", MAKE_STOCK, str(root), str(stock)], check=True, env=env, cwd=str(tmp_path))
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--transfer", stock,
                   "--nc", "2", "--no-verify", "--json", env={"YOLO_CONFIG_DIR": env["YOLO_CONFIG_DIR"]})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tr = json.loads(proc.stdout)["transfer"]
    start = Path(tr["out"])
    assert start.is_file() and start.parent == tmp_path  # beside STOCK.pt, not in the checkout
    assert 0 < tr["tensors"] < tr["neck_head_tensors"] and tr["params"] > 0
    assert [r["type"] for r in tr["layers_partly_transferred"]]  # the layers that read the new backbone's maps
    data = subprocess.run([sys.executable, str(REPO / "patcher" / "datasets.py"), "detect", str(tmp_path / "data")],
                          capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()[-1]
    out = subprocess.run([sys.executable, "-c", CHECK, str(root), "yolov8n-mobilenetv4_small.yaml", str(start), str(stock),
                          data, str(tmp_path / "runs")], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.split("RESULT", 1)[1])
    assert got["detect_equal"]  # same nc: the whole Detect head is the stock one
    assert got["in_file"] == tr["tensors"], got  # every tensor reported is the checkpoint's, no other
    assert got["at_train_start"] == tr["tensors"], got  # the trainer's rebuilt model starts from them


def test_transfer_file_missing_is_refused_before_writing(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov8", "--transfer",
                   tmp_path / "nope.pt", "--no-verify", env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}, check=2)
    assert "[transfer]" in proc.stderr and "nope.pt" in proc.stderr
    assert tree_digest(root) == before
