"""MobileNetV2's wide taps (SSDLite's): `mobilenetv2_050_wide` inside a yolov8n of Ultralytics 8.4.190.

The reference is timm's own `mobilenetv2_050` (random weights, nothing downloaded): its expansion outputs
(`blocks.{2,3,5}.0.bn1`) and `forward_features` (`conv_head` + `bn2`), read with hooks on timm's whole network
(test_backbones.Reference), and its parameter count less the classifier. The template-level checks of every
wide variant (parameter count, maps, fusion, ONNX) run in test_backbones.py, where the catalogue is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from test_weights_imagenet import REVISION, hf_env, hf_snapshot  # noqa: E402

from mbpatch.templates import CATALOG  # noqa: E402

# The backbone's maps, its parameter count and the channels each detector layer takes, as the checkout builds it.
BUILD = r"""
import json, sys, yaml, torch
root, cfg, x_path, out = sys.argv[1:5]
sys.path.insert(0, root)
from ultralytics.nn.tasks import DetectionModel
x = torch.load(x_path)
d = yaml.safe_load(open(cfg)); d["scale"] = "n"
model = DetectionModel(d, nc=3, verbose=False).eval()
backbone = model.model[0]
with torch.no_grad():
    maps = [t.clone() for t in backbone(x)]
    preds = model(x)
sppf = next(m for m in model.model if type(m).__name__ == "SPPF")
torch.save({"maps": maps, "backbone_params": sum(p.numel() for p in backbone.parameters()),
            "sppf_in": sppf.cv1.conv.in_channels, "out_shape": list(preds[0].shape)}, out)
"""


@pytest.mark.slow
def test_wide_taps_in_yolov8n_carry_timm_s_expansions_with_imagenet_weights(ultralytics_checkout, tmp_path):
    from test_backbones import Reference

    ref = Reference("mobilenetv2_050_wide", tmp_path)
    home = tmp_path / "hf-home"
    weights = hf_snapshot(home, CATALOG["mobilenetv2_050_wide"].hf_hub_id, ref.state)
    root = ultralytics_checkout("8.4.190")
    env = hf_env(home)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2_050_wide", "--arch", "yolov8", "--weights",
                   "imagenet", "--nc", "3", "--no-verify", "--json", env=env, check=0)
    doc = json.loads(proc.stdout)
    # the thin network's own timm checkpoint (it holds conv_head/bn2, which the thin taps ignore)
    assert doc["weights"]["repo"] == "timm/mobilenetv2_050.lamb_in1k" and doc["weights"]["revision"] == REVISION
    assert os.path.samefile(doc["weights"]["file"], weights)

    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)
    cfg = "ultralytics/cfg/models/v8/yolov8-mobilenetv2_050_wide.yaml"
    child = subprocess.run([sys.executable, "-c", BUILD, str(root), cfg, str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                           capture_output=True, text=True, cwd=root, env=full)
    assert child.returncode == 0, child.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")

    # 96, 96, 288, 1280 channels at strides 4, 8, 16, 32 (6x the thin stage widths 16, 16, 48; timm's 1280)
    assert [tuple(t.shape) for t in got["maps"]] == [(2, 96, 32, 40), (2, 96, 16, 20), (2, 288, 8, 10), (2, 1280, 4, 5)]
    assert got["sppf_in"] == 1280  # the neck takes the stride-32 map as it is
    assert got["out_shape"] == [2, 4 + 3, 16 * 20 + 8 * 10 + 4 * 5]  # boxes + 3 classes at the three strides
    assert got["backbone_params"] == ref.params == 687_680  # timm's mobilenetv2_050 less its classifier
    for k, (ours, theirs) in enumerate(zip(got["maps"], ref.maps(x))):
        err = float((ours - theirs).abs().max()) / max(1.0, float(theirs.abs().max()))
        assert err <= 1e-5, (f"stride {4 * 2 ** k}", err)
