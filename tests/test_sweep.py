"""The CI slice of the release sweep: scripts/sweep.py on two small releases and three families, every task.

8.0.50 has yolov8 detect/segment/classify but not yet pose (8.0.66) or obb (8.0.235), and neither YOLO26 nor
RT-DETR; 8.2.103 has every yolov8 task and RT-DETR, not YOLO26.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, wheel

VERSIONS = ("8.0.50", "8.2.103")
ARCHS = ("yolov8", "yolo26", "rtdetr")


@pytest.mark.slow
def test_sweep_slice(tmp_path):
    for v in VERSIONS:  # from the test cache (downloaded once)
        wheel("ultralytics", v)
    out, state = tmp_path / "compatibility.md", tmp_path / "state.json"
    out.write_text("# old\n\n## Earlier sweeps\n\nthe 2026 table\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sweep.py"), "--versions", ",".join(VERSIONS),
         "--archs", ",".join(ARCHS), "--out", str(out), "--state", str(state)],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "Swept on 20" in text and "(complete)" in text
    assert text.rstrip().endswith("## Earlier sweeps\n\nthe 2026 table")  # earlier tables are kept below
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]] for ln in text.splitlines()
            if ln.startswith("| 8.")}
    assert set(rows) == {"8.0.50 †", "8.2.103"}  # † marks a breakpoint release of the ref
    rows = {k.rstrip(" †"): v for k, v in rows.items()}
    v8, y26, rt = rows["8.0.50"]
    assert " pass detect " in v8 and ", segment " in v8 and ", classify " in v8
    assert "refused pose (arrived in 8.0.66)" in v8 and "refused obb (arrived in 8.0.235)" in v8
    assert y26.startswith("**refused**") and "8.4.0" in y26
    assert rt.startswith("**refused**") and "8.0.111" in rt
    v8, y26, rt = rows["8.2.103"]
    assert all(f"{t} " in v8 for t in ("detect", "segment", "pose", "obb", "classify")) and "refused" not in v8
    assert y26.startswith("**refused**") and " pass detect " in rt
    assert "FAIL" not in text.split("| release |")[1]
