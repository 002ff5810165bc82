"""`mbpatch doctor` (SPEC §9) on real Ultralytics sources: checkout, recipes (incl. by hand), journal,
environment of --python (incl. a broken torchvision) and shadowing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from conftest import REPO, run_cli, tree_digest

from mbpatch.doctor import diagnose, to_json

V = "8.2.103"
TASKS = "ultralytics/nn/tasks.py"


def doctor_json(root: Path, *extra, env=None):
    proc = run_cli("doctor", "--repo", root, "--json", *extra, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit"] == proc.returncode
    return doc


def check(doc, item, section=None):
    hits = [c for c in doc["checks"] if c["item"] == item and (section is None or c["section"] == section)]
    assert len(hits) == 1, (item, doc["checks"])
    return hits[0]


def states(doc, group=0):
    return {r["recipe"]: r["state"] for r in doc["recipes"][group]["steps"]}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- through the command line (with the environment probe) -------------------------------------------------


@pytest.mark.slow
def test_stock_checkout_with_checkout_on_path_is_healthy(ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    doc = doctor_json(root, env={"PYTHONPATH": str(root)})
    assert doc["ok"] and doc["exit"] == 0, doc["problems"]
    assert "Ultralytics 8.4.190" in check(doc, "kind")["detail"]
    assert doc["checkout"]["layout"] == "current"
    assert set(states(doc).values()) <= {"absent", "not needed"}
    assert check(doc, "journal")["verdict"] == "ok"
    for item in ("python", "numpy", "torch", "torchvision", "thop", "checkout import"):
        assert check(doc, item, "environment")["verdict"] == "ok", item
    assert "ops.nms works" in check(doc, "torchvision")["detail"]
    shadow = check(doc, "import ultralytics", "shadowing")
    assert shadow["verdict"] == "ok" and "loads this checkout" in shadow["detail"]
    assert tree_digest(root) == before  # doctor only looks


@pytest.mark.slow
def test_patched_checkout_shadowed_by_installed_copy(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout(V)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "rtdetr", "--no-verify", check=0)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run([sys.executable, "-c", "import importlib.util as u; s = u.find_spec('ultralytics'); "
                                "print(s.submodule_search_locations[0] if s else '')"],
                               capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
    proc = subprocess.run([sys.executable, "-m", "mbpatch", "doctor", "--repo", str(root), "--json"],
                          capture_output=True, text=True, env=env)
    doc = json.loads(proc.stdout)
    assert states(doc) == {"add_modules": "applied", "register": "applied", "channel_index": "applied",
                           "predict_once": "applied", "rtdetr_predict": "applied", "repc3": "applied",
                           "flops_stride": "not needed", "rect_off": "not needed", "optimizer_groups": "not needed",
                           "stride_probe": "not needed", "fuse": "applied",
                           "model_yaml": "applied"}
    assert doc["recipes"][0]["source"] == "journal entry 1"
    shadow = check(doc, "import ultralytics", "shadowing")
    if installed:  # the usual case: mbpatch's own environment has Ultralytics installed
        assert proc.returncode == 1 and shadow["verdict"] == "fail"
        assert installed in shadow["detail"] and "another copy" in shadow["detail"]
        assert "pip uninstall ultralytics" in shadow["fix"] and f"PYTHONPATH={root}" in shadow["fix"]
    else:
        assert shadow["verdict"] == "warn" and "fails outside the checkout" in shadow["detail"]
    # with the checkout on the path, nothing is wrong
    doc = doctor_json(root, env={"PYTHONPATH": str(root)})
    # ... but training: this release's validation calls np.trapz, which numpy >= 2.4 no longer has
    trapz_gone = not hasattr(numpy, "trapz")
    assert [p for p in doc["problems"] if not (trapz_gone and p.startswith("training: numpy.trapz"))] == []
    assert doc["exit"] == (1 if trapz_gone else 0), doc["problems"]
    assert check(doc, "checkout import")["verdict"] == "ok"


def _fake_python(tmp: Path) -> Path:
    """An interpreter whose torchvision was built for another torch (its nms operator is missing) and
    that has no thop: the real Python with a folder of stand-ins ahead of site-packages."""
    fake = tmp / "fake-site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        '__version__ = "0.1.0"\n\n\nclass _Ops:\n    @staticmethod\n    def nms(boxes, scores, iou):\n'
        '        raise RuntimeError("operator torchvision::nms does not exist")\n\n\nops = _Ops()\n')
    (fake / "torchvision-0.1.0.dist-info").mkdir()
    (fake / "torchvision-0.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.1.0\n")
    (fake / "thop").mkdir()
    (fake / "thop" / "__init__.py").write_text('raise ImportError("No module named \'thop\'")\n')
    py = tmp / "python-broken"
    py.write_text(f'#!/bin/sh\nPYTHONPATH="{fake}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    return py


@pytest.mark.slow
def test_broken_torchvision_pair_and_missing_thop(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout(V)
    doc = doctor_json(root, "--python", _fake_python(tmp_path), env={"PYTHONPATH": str(root)})
    assert doc["exit"] == 1
    tv = check(doc, "torchvision")
    assert tv["verdict"] == "fail" and "torchvision.ops.nms fails" in tv["detail"]
    assert "operator torchvision::nms does not exist" in tv["detail"] and "torch" in tv["fix"]
    thop = check(doc, "thop")
    assert thop["verdict"] == "warn" and "ultralytics-thop" in thop["fix"]
    assert check(doc, "torch")["verdict"] == "ok"


def test_missing_interpreter(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout(V)
    doc = doctor_json(root, "--python", tmp_path / "no-python")
    assert doc["exit"] == 1
    assert check(doc, "python")["verdict"] == "fail" and "not found" in check(doc, "python")["detail"]


@pytest.mark.slow
def test_interrupted_apply_explained_in_rich_output(ultralytics_checkout):
    root = ultralytics_checkout(V)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify",
                   env={"MBPATCH_CRASH_AT": "after-write:2"})
    assert proc.returncode == 99
    proc = run_cli("doctor", "--repo", root, env={"PYTHONPATH": str(root), "COLUMNS": "250"})
    assert proc.returncode == 1
    out = " ".join(proc.stdout.split())  # rich tables wrap long cells (mid-word, in a narrow column)
    assert "interrupted" in out and "killed half-way" in out and "not yet" in out and "tasks.py" in out
    assert "mbpatch revert" in out and "FAIL" in out and "problem(s) would make apply or training fail" in out


def test_not_a_checkout(tmp_path):
    proc = run_cli("doctor", "--repo", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "[detect]" in lines[0] and str(tmp_path) in lines[0]


# --- in process (no environment probe): recipe and journal states ----------------------------------------


def _by_hand(root: Path) -> None:
    """What a user following a tutorial does: AddModules, the import, the flag, t = m, the branch and a yaml."""
    folder = root / "ultralytics/nn/AddModules"
    folder.mkdir()
    shutil.copy(REPO / "templates" / "mobilenetv2.py", folder / "mobilenetv2.py")
    (folder / "__init__.py").write_text("from .mobilenetv2 import *\n")
    tasks = root / TASKS
    _edit(tasks, "    time_sync,\n)\n", "    time_sync,\n)\nfrom ultralytics.nn.AddModules import *\n")
    loop = '    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):  # from, number, module, args\n'
    _edit(tasks, loop, "    backbone = False\n" + loop + "        t = m\n")
    _edit(tasks, "if n > 1 else n  # depth gain\n        if m in {",
          "if n > 1 else n  # depth gain\n        if m in {MobileNetV2}:\n            m = m(*args)\n"
          "            c2 = m.width_list\n            backbone = True\n        elif m in {")
    (root / "ultralytics/cfg/models/v8/yolov8-mnv2-tutorial.yaml").write_text(
        "nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone:\n  - [-1, 1, MobileNetV2, []]\n  - [-1, 1, SPPF, [1024, 5]]\n"
        "head:\n  - [[3, 4, 5], 1, Detect, [nc]]\n")


@pytest.mark.slow
def test_steps_done_by_hand_count_and_half_done_is_partial(ultralytics_checkout):
    root = ultralytics_checkout(V)
    _by_hand(root)
    doc = to_json(diagnose(str(root), environment=False))
    group = doc["recipes"][0]
    assert group["source"] == "model yaml ultralytics/cfg/models/v8/yolov8-mnv2-tutorial.yaml"
    st = states(doc)
    assert st["add_modules"] == "applied" and st["register"] == "applied"
    assert st["channel_index"] == "absent" and st["predict_once"] == "absent"
    # the user's yaml cannot train without the missing steps: that is a failure, with the way out
    ci = check(doc, "mobilenetv2 / yolov8: channel_index")
    assert ci["verdict"] == "fail" and "yolov8-mnv2-tutorial.yaml" in ci["fix"]
    assert f"mbpatch apply --repo {root} --backbone mobilenetv2 --arch yolov8" in ci["fix"]  # runnable as printed
    assert doc["exit"] == 1

    # half of the channel step by hand: partial, naming what is missing
    _edit(root / TASKS, "        ch.append(c2)\n",
          "        if isinstance(c2, list):\n            ch = [0] * (5 - len(c2)) + c2\n        else:\n            ch.append(c2)\n")
    doc = to_json(diagnose(str(root), environment=False))
    row = [r for r in doc["recipes"][0]["steps"] if r["recipe"] == "channel_index"][0]
    assert row["state"] == "partial" and row["parts"] == {"backbone module": False, "i + 4 index": False, "five-slot ch": True}
    assert "missing: backbone module, i + 4 index" in row["detail"]

    # apply adds only what is missing; revert then gives back the hand-edited state
    hand = tree_digest(root)
    run_cli("apply", "--repo", root, "--backbone", "MobileNetV2", "--arch", "yolov8", "--no-verify", check=0)
    doc = to_json(diagnose(str(root), environment=False))
    assert all(r["state"] in ("applied", "not needed") for g in doc["recipes"] for r in g["steps"]), doc["recipes"]
    assert doc["exit"] == 0, doc["problems"]
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == hand


@pytest.mark.slow
def test_journal_problems(ultralytics_checkout):
    root = ultralytics_checkout(V)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    doc = to_json(diagnose(str(root), environment=False))
    assert check(doc, "journal")["verdict"] == "ok" and doc["exit"] == 0

    shutil.rmtree(root / ".mbpatch" / "originals")
    doc = to_json(diagnose(str(root), environment=False))
    line = check(doc, "originals")
    assert line["verdict"] == "fail" and TASKS in line["detail"] and "git" in line["fix"]

    (root / ".mbpatch" / "journal.json").write_text("[1, 2")
    doc = to_json(diagnose(str(root), environment=False))
    line = check(doc, "journal")
    assert line["verdict"] == "fail" and "corrupted" in line["detail"] and doc["exit"] == 1


@pytest.mark.slow
def test_git_status_is_reported(ultralytics_checkout):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = ultralytics_checkout(V)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "stock"], check=True)
    assert check(to_json(diagnose(str(root), environment=False)), "git")["detail"] == "branch main, clean"
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    line = check(to_json(diagnose(str(root), environment=False)), "git")
    # .mbpatch/ is listed in .git/info/exclude by apply (issue 8): git status does not show it
    assert "branch main" in line["detail"] and TASKS in line["detail"] and ".mbpatch/" not in line["detail"]


@pytest.mark.slow
def test_yolov5_git_checkout_shadowing_of_models(tmp_path):
    """In a YOLOv5 clone the package is the top-level `models`: doctor asks where `import models` goes."""
    from conftest_yolov5 import make_checkout

    root = make_checkout(tmp_path, "7.0.14", "git")
    doc = doctor_json(root)
    assert doc["checkout"]["kind"] == "yolov5" and doc["checkout"]["layout"] == "git"
    shadow = check(doc, "import models", "shadowing")
    assert shadow["verdict"] == "warn" and "fails outside the checkout" in shadow["detail"] and str(root) in shadow["fix"]
    doc = doctor_json(root, env={"PYTHONPATH": str(root)})
    shadow = check(doc, "import models", "shadowing")
    assert shadow["verdict"] == "ok" and "loads this checkout" in shadow["detail"]
