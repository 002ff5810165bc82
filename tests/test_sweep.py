"""The CI slice of the release sweep: scripts/sweep.py on two small releases, one of which refuses rtdetr."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, wheel

VERSIONS = ("8.0.50", "8.2.103")


def test_sweep_slice(tmp_path):
    for v in VERSIONS:  # from the test cache (downloaded once)
        wheel("ultralytics", v)
    out, state = tmp_path / "compatibility.md", tmp_path / "state.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sweep.py"), "--versions", ",".join(VERSIONS),
         "--out", str(out), "--state", str(state)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "Swept on 20" in text and "(complete)" in text
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:4]] for ln in text.splitlines()
            if ln.startswith("| 8.")}
    assert set(rows) == {"8.0.50 †", "8.2.103"}  # † marks a breakpoint release of the ref
    rows = {k.rstrip(" †"): v for k, v in rows.items()}
    assert rows["8.0.50"][0].startswith("pass")
    assert rows["8.0.50"][1].startswith("**refused**") and "8.0.111" in rows["8.0.50"][1]
    assert rows["8.2.103"][0].startswith("pass") and rows["8.2.103"][1].startswith("pass")
    assert "FAIL" not in text.split("| release |")[1]
