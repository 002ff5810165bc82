"""`mbpatch verify --export FORMAT[,FORMAT...]|all` on real checkouts: each format through the checkout's own
exporter and backend, compared with PyTorch, the stock model of the same family and scale alongside.

What a user checks: exit 0, every asked format "match" with its output as close to PyTorch's as the stated
tolerance, the exported files where the work folder says (an OpenVINO .xml, an NCNN .param), the stock model
through the same formats, and the checkout's bytes unchanged. imgsz 32 keeps each export to seconds.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest, unpacked
from conftest_yolov5 import make_git
from test_train import git_trainable

FOUR = ("torchscript", "onnx", "openvino", "ncnn")
ARTEFACT = {"torchscript": "*.torchscript", "onnx": "*.onnx", "openvino": "*.xml", "ncnn": "model.ncnn.param"}


@pytest.fixture(scope="module")
def u84(tmp_path_factory):
    # no digit followed by n/s/m/l/x in the folder name: Ultralytics strips such a "scale" from the whole path
    root = tmp_path_factory.mktemp("u84exp") / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    return root


def verify_export(root: Path, work: Path, formats: str, code: int = 0) -> dict:
    proc = run_cli("verify", "--repo", root, "--export", formats, "--imgsz", 32, "--json", "--work", work)
    assert proc.returncode == code, proc.stdout[-6000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def check_matches(doc: dict, work: Path, formats=FOUR):
    rows = doc["exports"]["formats"]
    for fmt in formats:
        row = rows[fmt]
        assert row["verdict"] == "match", (fmt, row)
        for role in ("patched", "stock"):
            r = row[role]
            assert r["equal"] and r["out_shape"] == r["torch_shape"], (fmt, role, r)
            assert r["max_abs_diff"] <= row["rtol"] * max(1.0, r["ref_max_abs"]), (fmt, role, r)
            path = Path(r["file"])
            assert work in path.parents and path.exists(), path
            found = [path] if path.is_file() else list(path.rglob(ARTEFACT[fmt]))
            assert found and all(f.stat().st_size > 0 for f in found), (fmt, path)
        print(f"{fmt}: patched {row['patched']['size_bytes'] / 1e6:.1f} MB diff {row['patched']['max_abs_diff']:.2g}, "
              f"stock {row['stock']['size_bytes'] / 1e6:.1f} MB diff {row['stock']['max_abs_diff']:.2g}")
    # the stock model went through the same exporter: its own yaml, not the patched one
    assert doc["exports"]["stock_model"] != doc["exports"]["model"]


@pytest.mark.slow
def test_yolo26n_repvit_m1_to_four_formats(u84, tmp_path):
    run_cli("apply", "--repo", u84, "--backbone", "repvit_m1", "--arch", "yolo26", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_export(u84, tmp_path, ",".join(FOUR))
    check_matches(doc, tmp_path)
    assert Path(doc["exports"]["stock_model"]).name == "yolo26n.yaml"
    assert doc["export"]["ok"] and doc["export"]["export"]["onnx_shape"]  # the --export onnx document stays
    assert tree_digest(u84) == before
    run_cli("revert", "--repo", u84, check=0)


@pytest.mark.slow
def test_yolov8n_mobilenetv4_hybrid_medium_export_all(u84, tmp_path):
    """Attention blocks; `all`: every format the release offers, judged or said why not."""
    run_cli("apply", "--repo", u84, "--backbone", "mobilenetv4_hybrid_medium", "--arch", "yolov8", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_export(u84, tmp_path, "all")
    check_matches(doc, tmp_path)
    rows = doc["exports"]["formats"]
    assert set(rows) == set(doc["exports"]["release_formats"])  # every format of the release has a row
    assert rows["engine"]["verdict"] == "not on this machine"
    for fmt, row in rows.items():
        if row["verdict"].startswith("missing runtime"):  # named with its pip line, and not installed behind our back
            assert row["pip"].startswith("pip install ") and row["missing"], row
            assert all(importlib.util.find_spec(m) is None for m in row["missing"]), row
    if importlib.util.find_spec("MNN") is None:  # not in the test extras: named, not exported, not installed
        assert rows["mnn"]["verdict"] == "missing runtime (skipped)" and rows["mnn"]["pip"] == "pip install MNN"
        assert not list(tmp_path.rglob("*.mnn"))
    assert tree_digest(u84) == before
    run_cli("revert", "--repo", u84, check=0)


@pytest.mark.slow
def test_yolov5_v7_0_git_to_torchscript_onnx_openvino(tmp_path):
    root = git_trainable(make_git(tmp_path / "yolov5", "7.0.14"))
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov5", "--no-verify", check=0)
    before = tree_digest(root)
    doc = verify_export(root, tmp_path / "work", "torchscript,onnx,openvino")
    check_matches(doc, tmp_path / "work", ("torchscript", "onnx"))
    assert Path(doc["exports"]["stock_model"]).name == "yolov5n.yaml"
    ov = doc["exports"]["formats"]["openvino"]
    if ov["verdict"] != "match":
        # v7.0's exporter runs openvino-dev's `mo` and imports openvino.inference_engine, both gone from
        # openvino >= 2024: the stock model fails the same way, which is the release's limit, not the patch's
        assert ov["verdict"] == "release limit", ov
        assert ov["patched"]["error"] and ov["stock"]["error"], ov
        assert "openvino" in ov["stock"]["error"].lower() or "mo" in ov["stock"]["error"], ov
    assert tree_digest(root) == before


def test_verdicts_judge_the_patch_against_the_stock_model():
    from patcher.export import _verdict

    match = {"exported": True, "equal": True}
    differs = {"exported": True, "equal": False, "max_abs_diff": 0.5}
    broken = {"ok": False, "error": "RuntimeError: unsupported operator"}
    assert _verdict(match, match) == "match"
    assert _verdict(broken, match) == "failed"  # stock exports, the patched model does not: the patch's fault
    assert _verdict(differs, match) == "differs"
    assert _verdict(broken, dict(broken)) == "release limit"  # the stock model fails the same way
    assert _verdict(differs, dict(differs)) == "release limit"
    assert _verdict(broken, differs) == "failed"  # not the same failure
    assert _verdict({"exported": True, "file": "m.mlpackage"}, None) == "converted, not run"
