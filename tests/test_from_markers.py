"""`mbpatch revert --from-markers`: the journal was deleted, the edits are still there (real releases).

What a user checks: every byte of the release is back (the whole tree's digest equals the untouched copy's),
an edit of theirs is never dropped silently (refused, one line naming the file, nothing changed; with --force
their copy is saved under .mbpatch/), and a layout no release archive holds (a YOLOv5 git clone) is refused
with the way that works there.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli, tree_digest, wheel
from conftest_yolov5 import make_git, pypi_source, yolov5_env  # noqa: F401 (yolov5_env is a fixture)


def orphan(root):
    """What `git clean -fdx` or a copy without hidden folders leaves: the edits without their journal."""
    shutil.rmtree(root / ".mbpatch")


def digest(root):
    return {k: v for k, v in tree_digest(root).items() if not k.startswith(".mbpatch")}


@pytest.mark.slow
def test_stacked_applies_undone_exactly_on_8_4_190(ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    before = digest(root)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "rtdetr", "--head", "light",
            "--no-verify", check=0)
    run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolo26", "--task", "segment",
            "--no-verify", check=0)
    orphan(root)
    refused = run_cli("revert", "--repo", root, check=2)  # plain revert has nothing to restore from: it says how
    assert "--from-markers" in refused.stderr and "Traceback" not in refused.stderr
    source = wheel("ultralytics", "8.4.190")
    dry = run_cli("revert", "--repo", root, "--from-markers", "--source", source, "--dry-run", check=0)
    assert "would restore ultralytics/nn/tasks.py" in dry.stdout and digest(root) != before
    proc = run_cli("revert", "--repo", root, "--from-markers", "--source", source, check=0)
    assert "mobilenetv4_small (rtdetr)" in proc.stdout and "repvit_m1 (yolo26 segment)" in proc.stdout
    assert digest(root) == before
    assert not (root / ".mbpatch").exists()


@pytest.mark.slow
def test_users_edit_refused_then_saved_with_force_8_3_100(ultralytics_checkout):
    """Also: rect=False (no marker of its own) is found by the replay; the release comes from the index."""
    root = ultralytics_checkout("8.3.100")
    before = digest(root)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--rect-off", "--no-verify", check=0)
    orphan(root)
    tasks = root / "ultralytics/nn/tasks.py"
    mine = tasks.read_text(encoding="utf-8") + "\n# my own line\n"
    tasks.write_text(mine, encoding="utf-8")
    edited = digest(root)
    proc = run_cli("revert", "--repo", root, "--from-markers", check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ultralytics/nn/tasks.py" in lines[0] and "Traceback" not in proc.stderr
    assert digest(root) == edited  # nothing changed
    proc = run_cli("revert", "--repo", root, "--from-markers", "--force", check=0)
    saved = list((root / ".mbpatch").glob("edited-*/ultralytics/nn/tasks.py"))
    assert len(saved) == 1 and saved[0].read_text(encoding="utf-8") == mine
    assert str(saved[0].parent.parent.parent.parent.name) in proc.stdout
    assert digest(root) == before  # train.py's rect=False is gone too


def test_yolov5_pypi_layout_and_git_clone(tmp_path, yolov5_env):
    root = tmp_path / "pypi"
    shutil.copytree(pypi_source("7.0.14"), root, ignore=shutil.ignore_patterns("__pycache__"))
    before = digest(root)
    run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov5", "--no-verify", env=yolov5_env, check=0)
    orphan(root)
    run_cli("revert", "--repo", root, "--from-markers", "--source", wheel("yolov5", "7.0.14"), env=yolov5_env, check=0)
    assert digest(root) == before

    git = make_git(tmp_path / "git", "7.0.14")
    run_cli("apply", "--repo", git, "--backbone", "mobilenetv2", "--arch", "yolov5", "--no-verify", env=yolov5_env, check=0)
    orphan(git)
    edited = digest(git)
    proc = run_cli("revert", "--repo", git, "--from-markers", env=yolov5_env, check=2)
    assert "git checkout --" in proc.stderr and "Traceback" not in proc.stderr
    assert digest(git) == edited


def test_journal_present_means_plain_revert(ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    proc = run_cli("revert", "--repo", root, "--from-markers", check=2)
    assert "journal" in proc.stderr and "mbpatch revert" in proc.stderr
    run_cli("revert", "--repo", root, check=0)


def test_generated_yaml_deleted_too(ultralytics_checkout):
    """Only the code edits and the backbone source are left: the applies are read from parse_model's branch."""
    root = ultralytics_checkout("8.4.190")
    before = digest(root)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_medium", "--arch", "yolo11", "--no-verify", check=0)
    orphan(root)
    (root / "ultralytics/cfg/models/11/yolo11-mobilenetv4_medium.yaml").unlink()
    proc = run_cli("revert", "--repo", root, "--from-markers", "--source", wheel("ultralytics", "8.4.190"), check=0)
    assert "its yaml is gone" in proc.stdout
    assert digest(root) == before


def test_applies_ordered_by_whole_names(ultralytics_checkout):
    """mobilenetv2_050 applied before mobilenetv2: `MobileNetV2` must not be found inside `MobileNetV2_050`, or
    the replay would register the names in another order than the checkout holds."""
    root = ultralytics_checkout("8.4.190")
    before = digest(root)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2_050", "--arch", "yolov8", "--no-verify", check=0)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolo11", "--no-verify", check=0)
    orphan(root)
    proc = run_cli("revert", "--repo", root, "--from-markers", "--source", wheel("ultralytics", "8.4.190"), check=0)
    assert "[mobilenetv2_050 (yolov8), mobilenetv2 (yolo11)]" in " ".join(proc.stdout.split())
    assert digest(root) == before
