"""YOLOv5 `--task segment` (issue 9): models/segment/yolov5<scale>-seg-<backbone>.yaml built with the checkout's
SegmentationModel, on v7.0 (git layout) and refused on PyPI 6.1, which has no segmentation (PyPI 6.2 has it)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, tree_digest
from conftest_yolov5 import make_git, make_pypi, yolov5_env  # noqa: F401 (yolov5_env is a fixture)


@pytest.mark.slow
def test_segment_on_v7_builds_segmentation_model_and_reverts(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    original = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov5", "--task", "segment",
                   "--json", env=yolov5_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert "models/segment/yolov5n-seg-mobilenetv4_small.yaml" in doc["changed"]
    v = doc["verification"]
    assert v["ok"] and v["outputs_match"], v.get("error")
    s, p = v["stock"], v["patched"]
    assert p["summary"][0]["module"] == "MobileNetV4ConvSmall" and p["summary"][-1]["module"].endswith("Segment")
    # eval: (detections, proto); 640x480 has 3 anchors x (80*60 + 40*30 + 20*15) rows of 4 + 1 + 80 + 32 masks
    assert p["forward"]["640x480"][0] == [1, 3 * 6300, 85 + 32]
    assert p["forward"]["640x480"][1] == [1, 32, 120, 160]  # 32 mask prototypes at stride 4
    assert p["forward"]["train 2x640x480"] == s["forward"]["train 2x640x480"]
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(root) == original


def test_segment_refused_before_it_arrived(tmp_path):
    root = make_pypi(tmp_path / "y5", "6.1.9")
    original = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov5", "--task", "segment")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "v7.0" in line and "segment" in line, line
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov5", "--task", "pose")
    assert proc.returncode == 2 and "has no pose task" in proc.stderr, proc.stderr
    assert tree_digest(root) == original
