"""`mbpatch bench` on a tiny configuration: one backbone, two runtimes (torch, onnx), imgsz 64, on 8.4.190.

A user reads the table: each patched/stock ratio must be the quotient of the two times printed in the same
table, the JSON must carry the same numbers, and the checkout must be byte-identical afterwards (the models
are built in a temporary copy)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import run_cli, tree_digest, unpacked


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "ultralytics-8.4.190"  # no digit+n/s/m/l/x in the folder names
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    return root


def table_rows(stdout: str):
    """(model, {column: cell}) for each row of the rich table printed on stdout."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(("┃", "│"))]
    header = [c.strip() for c in lines[0].strip("┃").split("┃")]
    return [dict(zip(header, (c.strip() for c in ln.strip("│").split("│")))) for ln in lines[1:]]


@pytest.mark.slow
def test_bench_table_ratios_come_from_its_times(checkout):
    before = tree_digest(checkout)
    args = ("bench", "--repo", checkout, "--arch", "yolov8", "--backbone", "mobilenetv2_050", "--runtime", "torch,onnx",
            "--imgsz", 64, "--runs", 5)
    proc = run_cli(*args, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "bench: timing round" in proc.stderr  # progress goes to stderr, not into the table
    rows = {r["model"]: r for r in table_rows(proc.stdout)}
    assert set(rows) == {"stock", "mobilenetv2_050"}, rows
    for rt in ("torch", "onnx"):
        stock_ms, ms = float(rows["stock"][f"{rt} ms"]), float(rows["mobilenetv2_050"][f"{rt} ms"])
        assert stock_ms > 0 and ms > 0
        assert float(rows["mobilenetv2_050"][f"{rt} x"]) == pytest.approx(ms / stock_ms, abs=0.0005)
        assert float(rows["stock"][f"{rt} x"]) == 1.0
    # fewer parameters than stock yolov8n (2.45 M vs 3.16 M): the table says which model is which
    assert int(rows["mobilenetv2_050"]["params"].replace(",", "")) < int(rows["stock"]["params"].replace(",", ""))
    assert tree_digest(checkout) == before

    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["runtimes"] == ["torch", "onnx"] and doc["imgsz"] == 64 and doc["threads"] == 1
    stock, patched = doc["rows"]
    assert stock["label"] == "stock" and patched["label"] == "mobilenetv2_050"
    for rt in ("torch", "onnx"):
        assert patched["ratio"][rt] == pytest.approx(patched["ms"][rt] / stock["ms"][rt], rel=1e-12)
    assert patched["gflops"] < stock["gflops"] and re.fullmatch(r"yolov8n(-mobilenetv2_050)?\.yaml", patched["model"])
    assert tree_digest(checkout) == before  # nothing written into the checkout, no journal, no yaml


def test_bench_refuses_an_unknown_runtime(checkout):
    before = tree_digest(checkout)
    proc = run_cli("bench", "--repo", checkout, "--arch", "yolov8", "--runtime", "torch,tensorrt")
    assert proc.returncode == 2 and "unknown runtime tensorrt" in proc.stderr, proc.stderr
    assert tree_digest(checkout) == before
