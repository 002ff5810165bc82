"""Doctor's training section on real checkouts: what would make training fail, with the fix."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy
import pytest
import torch

from conftest import run_cli
from conftest_yolov5 import make_git, make_master

NEW_TORCH = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6)


def doctor(root, *extra, env=None):
    proc = run_cli("doctor", "--repo", root, "--json", *extra, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), proc.returncode


def training(doc):
    return {c["item"]: c for c in doc["checks"] if c["section"] == "training"}


@pytest.mark.slow
@pytest.mark.skipif(not NEW_TORCH, reason="torch < 2.6 loads full checkpoints by default")
def test_yolov5_v7_0_with_new_torch_fails_strip_optimizer_and_names_the_fix(tmp_path):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    doc, code = doctor(root)
    item = training(doc)["torch.load"]
    assert item["verdict"] == "fail" and code == 1
    assert "strip_optimizer" in item["detail"] and torch.__version__ in item["detail"]
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in item["fix"] and "newer checkout" in item["fix"]
    assert any("torch.load" in p for p in doc["problems"])
    assert training(doc)["pkg_resources"]["verdict"] == "ok"  # this environment has setuptools < 81
    # with the switch set, the same checkout loads its checkpoints
    doc, _ = doctor(root, env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert training(doc)["torch.load"]["verdict"] == "ok"


@pytest.mark.slow
def test_pkg_resources_missing_is_a_failure_for_checkouts_that_import_it(tmp_path):
    """An interpreter without pkg_resources (as with setuptools >= 81): a YOLOv5 v7.0 checkout fails, 8.4.190 does not care."""
    shadow = tmp_path / "no-setuptools"
    shadow.mkdir()
    (shadow / "pkg_resources.py").write_text("raise ModuleNotFoundError(\"No module named 'pkg_resources'\")\n")
    py = tmp_path / "python"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} \"$@\"\n")
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    root = make_git(tmp_path / "yolov5", "7.0.14")
    doc, code = doctor(root, "--python", py)
    item = training(doc)["pkg_resources"]
    assert item["verdict"] == "fail" and code == 1
    assert "utils/general.py" in item["detail"] and "setuptools<81" in item["fix"]


@pytest.mark.slow
def test_current_ultralytics_has_nothing_to_say(ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    doc, _ = doctor(root, env={"PYTHONPATH": str(root)})
    items = training(doc)
    assert items["torch.load"]["verdict"] == "ok" and items["validation nms"]["verdict"] == "ok"
    assert "pkg_resources" not in items and "numpy.trapz" not in items  # 8.4.190 uses neither


@pytest.mark.slow
@pytest.mark.skipif(hasattr(numpy, "trapz"), reason="this numpy still has np.trapz")
def test_old_ultralytics_validation_needs_np_trapz(ultralytics_checkout):
    root = ultralytics_checkout("8.1.20")
    doc, code = doctor(root, env={"PYTHONPATH": str(root)})
    items = training(doc)
    assert items["numpy.trapz"]["verdict"] == "fail" and code == 1
    assert "ultralytics/utils/metrics.py" in items["numpy.trapz"]["detail"] and "numpy<2.4" in items["numpy.trapz"]["fix"]
    if NEW_TORCH:
        assert items["torch.load"]["verdict"] == "fail"  # 8.1.x's torch_safe_load has no weights_only=False


@pytest.mark.slow
@pytest.mark.skipif(not NEW_TORCH, reason="torch < 2.6 loads full checkpoints by default")
def test_yolov5_master_loads_through_ultralytics_torch_load(tmp_path):
    """Master calls ultralytics.utils.patches.torch_load (weights_only=False) where v7.0 calls torch.load: no
    torch.load failure and no environment variable to set; an interpreter whose `ultralytics` lacks that
    loader fails with the pip line instead (issue 17)."""
    root = make_master(tmp_path / "yolov5")
    doc, _ = doctor(root)
    item = training(doc)["torch.load"]
    assert item["verdict"] == "ok" and "ultralytics.utils.patches.torch_load" in item["detail"], item
    assert not any("weights_only" in p for p in doc["problems"])
    # an `ultralytics` without utils/patches.py (as in releases before torch_load existed) ahead on sys.path
    old = tmp_path / "old-ultralytics"
    (old / "ultralytics").mkdir(parents=True)
    (old / "ultralytics" / "__init__.py").write_text("__version__ = '8.0.0'\n")
    doc, code = doctor(root, env={"PYTHONPATH": str(old)})
    item = training(doc)["torch.load"]
    assert item["verdict"] == "fail" and code == 1
    assert "torch_load does not pass weights_only=False" in item["detail"] and "pip install -U ultralytics" in item["fix"]
