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
FIVE = FOUR + ("litert",)  # LiteRT: litert-torch + ai-edge-litert, in the test extras
ARTEFACT = {"torchscript": "*.torchscript", "onnx": "*.onnx", "openvino": "*.xml", "ncnn": "model.ncnn.param",
            "litert": "*.tflite"}


@pytest.fixture(scope="module")
def u84(tmp_path_factory):
    # no digit followed by n/s/m/l/x in the folder name: Ultralytics strips such a "scale" from the whole path
    root = tmp_path_factory.mktemp("u84exp") / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    return root


def verify_export(root: Path, work: Path, formats: str, *more, code: int = 0) -> dict:
    proc = run_cli("verify", "--repo", root, "--export", formats, *more, "--imgsz", 32, "--json", "--work", work)
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
            # the check can fail: another image moves PyTorch's output by far more than the tolerance (an
            # untrained model's output hardly depends on its input; verify calibrates its BatchNorm statistics)
            assert r["bn_calibrated"] > 0 and r["input_sensitivity"] > 100 * r["atol"], (fmt, role, r)
            if "compared" in r:  # top-k heads: detections were compared, not all tied at the k-th score
                assert r["compared"] > 0 and r["matched"] == r["compared"], (fmt, role, r)
            path = Path(r["file"])
            assert work in path.parents and path.exists(), path
            found = [path] if path.is_file() else list(path.rglob(ARTEFACT[fmt]))
            assert found and all(f.stat().st_size > 0 for f in found), (fmt, path)
        print(f"{fmt}: " + ", ".join(
            f"{role} {row[role]['size_bytes'] / 1e6:.1f} MB max diff {row[role]['max_abs_diff']:.2g} "
            f"(worst {row[role].get('worst_diff', row[role]['max_abs_diff']):.2g} of tolerance {row[role]['atol']:.2g}), "
            f"another image moves torch by {row[role]['input_sensitivity']:.3g}" for role in ("patched", "stock")))
    # the stock model went through the same exporter: its own yaml, not the patched one
    assert doc["exports"]["stock_model"] != doc["exports"]["model"]


@pytest.mark.slow
def test_yolo26n_repvit_m1_to_five_formats(u84, tmp_path):
    run_cli("apply", "--repo", u84, "--backbone", "repvit_m1", "--arch", "yolo26", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_export(u84, tmp_path, ",".join(FIVE))
    check_matches(doc, tmp_path, FIVE)
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
    check_matches(doc, tmp_path, FIVE)
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


@pytest.mark.slow
def test_openvino_int8_reports_agreement_not_a_tolerance(u84, tmp_path):
    """--int8: calibrated on the generated dataset, judged by how much of PyTorch fp32's answer survives, for the
    patched and the stock model; formats without a CPU INT8 export are named, not exported."""
    run_cli("apply", "--repo", u84, "--backbone", "mobilenetv2_050", "--arch", "yolov8", "--no-verify", check=0)
    before = tree_digest(u84)
    doc = verify_export(u84, tmp_path, "openvino,torchscript", "--int8")
    rows = doc["exports"]["formats"]
    assert doc["exports"]["int8"] and rows["torchscript"]["verdict"] == "not offered", rows["torchscript"]
    ov = rows["openvino"]
    assert ov["verdict"].startswith("int8: agreement "), ov
    for role in ("patched", "stock"):
        r = ov[role]
        assert r["int8"] and r["out_shape"] == r["torch_shape"] and r["top_k"] == 10, (role, r)
        assert r["top_agreement"] == r["top_matched"] / 10 and r["score_sqnr_db"] is not None, (role, r)
        xml = Path(r["file"])
        assert "int8" in xml.name and tmp_path in xml.parents, xml
        # quantized for real: the IR holds 8-bit fake-quantize nodes and weights
        ir = "".join(p.read_text() for p in xml.glob("*.xml"))
        assert "FakeQuantize" in ir and ('element_type="i8"' in ir or 'element_type="u8"' in ir), role
        print(f"openvino int8 {role}: {r['size_bytes'] / 1e6:.2f} MB, top-10 kept {r['top_matched']}, score SQNR "
              f"{r['score_sqnr_db']:.1f} dB, box SQNR {r['box_sqnr_db']:.1f} dB, max rel. error {r['max_rel_error']:.2g}")
    calib = tmp_path / "export" / "calibration" / "data.yaml"
    assert calib.is_file()  # the generated dataset was the calibration data; nothing downloaded
    assert tree_digest(u84) == before
    run_cli("revert", "--repo", u84, check=0)


def test_int8_agreement_counts_kept_detections():
    """agreement(): PyTorch's best detections found again (same class, IoU >= 0.5) count, moved ones do not."""
    import numpy as np

    from patcher.export_child import agreement

    rng = np.random.default_rng(0)
    ref = np.zeros((1, 6, 50), dtype=np.float32)  # 4 box + 2 class scores, 50 anchors (Ultralytics' layout)
    ref[0, :2] = rng.uniform(10, 100, (2, 50))
    ref[0, 2:4] = 8.0
    ref[0, 4] = np.linspace(0.99, 0.01, 50)
    same = agreement(ref.copy(), ref, topk=False, channel_axis=1)
    assert same["top_agreement"] == 1.0 and same["score_sqnr_db"] is None  # no noise at all
    moved = ref.copy()
    moved[0, 0, :3] += 50.0  # the three best boxes moved away: IoU 0
    res = agreement(moved, ref, topk=False, channel_axis=1)
    assert res["top_matched"] == 7 and res["top_agreement"] == 0.7 and res["box_sqnr_db"] < 20, res
