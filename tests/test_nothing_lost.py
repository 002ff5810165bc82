"""Nothing lost, for real (issue 8): one test per class, on real Ultralytics wheels and a real YOLOv5 layout.

Every test runs the CLI as a user would and checks: the exit code, a refusal is ONE line on stderr with no
"Traceback", and every byte the user had is either on disk or saved under `.mbpatch/` at a printed path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest, unpacked
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)

from mbpatch.doctor import diagnose, to_json
from mbpatch.journal import Journal, sha256

OLD = "8.3.100"  # an 8.3.x release
NEW = "8.4.190"
TASKS = "ultralytics/nn/tasks.py"
YAML = "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml"
ADD = "ultralytics/nn/AddModules"


def apply(root, *extra, backbone="mobilenetv2", arch="yolov8", env=None, check=None):
    return run_cli("apply", "--repo", root, "--backbone", backbone, "--arch", arch, "--no-verify", *extra,
                   env=env, check=check)


def one_line(proc) -> str:
    """The single line a refusal prints on stderr (nothing on stdout, no traceback)."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    assert proc.stdout.strip() == "", proc.stdout
    return lines[0]


def flat(text: str) -> str:
    """stdout with rich's line wrapping undone (paths may be split across lines)."""
    return text.replace("\n", "")


def without_mbpatch(digest: dict) -> dict:
    return {k: v for k, v in digest.items() if not k.startswith(".mbpatch")}


def work_tree(root: Path) -> dict:
    """The checkout's files, without git's own folder and mbpatch's journal."""
    return {k: v for k, v in without_mbpatch(tree_digest(root)).items() if not k.startswith(".git/")}


def doctor(root) -> dict:
    return to_json(diagnose(str(root), environment=False))


def check(doc: dict, item: str) -> dict:
    hits = [c for c in doc["checks"] if c["item"] == item]
    assert hits, [c["item"] for c in doc["checks"]]
    return hits[0]


def all_written(root: Path) -> bool:
    """Every entry done and every file as the journal's last entry for it says."""
    entries = Journal(root).entries()
    last = {f["path"]: f for e in entries for f in e["files"]}
    if not entries or any(e["state"] != "done" for e in entries):
        return False
    return all(sha256((root / rel).read_bytes() if (root / rel).is_file() else None) == f["sha_after"]
               for rel, f in last.items())


# --- 1. stacked applies keep the chain ---------------------------------------------------------------------


@pytest.mark.slow
def test_edit_between_two_applies_is_never_discarded(ultralytics_checkout):
    root = ultralytics_checkout(NEW)
    pristine = tree_digest(root)
    apply(root, check=0)
    tasks = root / TASKS
    tasks.write_text(tasks.read_text() + "\n\nclass MyTutorialBlock:  # another tutorial's module\n    pass\n")
    users = tasks.read_bytes()

    proc = apply(root, backbone="mobilenetv4_small", check=0)  # the second apply notices and records the edit
    assert TASKS in flat(proc.stdout) and "changed since mbpatch last patched it" in flat(proc.stdout)
    assert b"class MyTutorialBlock" in tasks.read_bytes()  # the edit is still in the file
    assert (root / ".mbpatch/originals/2" / TASKS).read_bytes() == users
    assert check(doctor(root), "edited between applies")["verdict"] == "warn"

    before = tree_digest(root)
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "edited between two applies" in line and TASKS in line and "--force" in line and "[revert]" in line
    assert tree_digest(root) == before

    proc = run_cli("revert", "--repo", root, "--force", check=0)
    saved = sorted((root / ".mbpatch").glob("edited-*"))
    assert len(saved) == 1 and str(saved[0]) in flat(proc.stdout)
    assert (saved[0] / "before-apply-2" / TASKS).read_bytes() == users
    assert without_mbpatch(tree_digest(root)) == pristine


@pytest.mark.slow
def test_edit_between_applies_yolov5(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    pristine = tree_digest(root)
    apply(root, arch="yolov5", env=yolov5_env, check=0)
    yolo = root / "models/yolo.py"
    yolo.write_text(yolo.read_text() + "\n# my own change between applies\n")
    users = yolo.read_bytes()
    apply(root, backbone="repvit_m1", arch="yolov5", env=yolov5_env, check=0)
    proc = run_cli("revert", "--repo", root, env=yolov5_env)
    assert proc.returncode == 2 and "models/yolo.py" in one_line(proc)
    proc = run_cli("revert", "--repo", root, "--force", env=yolov5_env, check=0)
    saved = sorted((root / ".mbpatch").glob("edited-*"))
    assert len(saved) == 1 and str(saved[0]) in flat(proc.stdout)
    assert (saved[0] / "before-apply-2/models/yolo.py").read_bytes() == users
    assert without_mbpatch(tree_digest(root)) == pristine


# --- 2. upgrades are detected ------------------------------------------------------------------------------


@pytest.mark.slow
def test_upgrade_is_detected_and_never_downgraded(ultralytics_checkout):
    root = ultralytics_checkout(OLD)
    apply(root, check=0)
    new_src = unpacked("ultralytics", NEW, "ultralytics")
    shutil.copytree(new_src / "ultralytics", root / "ultralytics", dirs_exist_ok=True)  # the upgrade
    new_tasks = (new_src / TASKS).read_bytes()
    assert (root / TASKS).read_bytes() == new_tasks
    upgraded = tree_digest(root)

    proc = apply(root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert f"upgraded from {OLD} to {NEW}" in line and "[upgrade]" in line and "mbpatch revert" in line
    assert tree_digest(root) == upgraded

    doc = doctor(root)
    up = check(doc, "upgraded")
    assert up["verdict"] == "fail" and f"from {OLD} to {NEW}" in up["detail"] and TASKS in up["detail"]
    assert doc["exit"] == 1

    proc = run_cli("revert", "--repo", root, check=0)
    out = flat(proc.stdout)
    assert f"upgraded from {OLD} to {NEW}" in out and "original bytes" not in out
    assert (root / TASKS).read_bytes() == new_tasks  # never 8.3's tasks.py over 8.4's
    kept = sorted((root / ".mbpatch").glob("kept-*"))
    assert len(kept) == 1 and str(kept[0]) in out
    assert (kept[0] / TASKS).read_bytes() == (unpacked("ultralytics", OLD, "ultralytics") / TASKS).read_bytes()
    assert not (root / ADD).exists() and not (root / YAML).exists()
    assert without_mbpatch(tree_digest(root)) == {k: v for k, v in upgraded.items()
                                                  if not k.startswith((ADD, YAML, ".mbpatch"))}
    imp = subprocess.run([sys.executable, "-c", "import ultralytics.nn.tasks"], cwd=root, capture_output=True,
                         text=True, env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": ""})
    assert imp.returncode == 0, imp.stderr[-2000:]

    apply(root, check=0)  # the way out: apply again patches 8.4.190
    run_cli("revert", "--repo", root, check=0)
    assert (root / TASKS).read_bytes() == new_tasks


@pytest.mark.slow
def test_format_1_journal_still_reverts(ultralytics_checkout):
    """A journal written before the version was recorded (format 1) reverts as before; no upgrade is guessed."""
    import json

    root = ultralytics_checkout(OLD)
    pristine = tree_digest(root)
    apply(root, check=0)
    path = root / ".mbpatch/journal.json"
    data = json.loads(path.read_text())
    data["format"] = 1
    for e in data["entries"]:
        e.pop("version"), e.pop("kind")
    path.write_text(json.dumps(data))
    proc = run_cli("revert", "--repo", root, "--dry-run", check=0)
    assert "would restore " + TASKS in flat(proc.stdout)
    proc = run_cli("revert", "--repo", root, check=0)
    assert "original bytes" in flat(proc.stdout)
    assert tree_digest(root) == pristine


# --- 3. installed packages are not checkouts ---------------------------------------------------------------


@pytest.mark.slow
def test_installed_package_refused_and_leftovers_revertible(tmp_path):
    site = tmp_path / "lib/python3.11/site-packages"
    src = unpacked("ultralytics", OLD, "ultralytics")
    shutil.copytree(src / "ultralytics", site / "ultralytics")
    info = site / f"ultralytics-{OLD}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ultralytics\nVersion: {OLD}\n")
    pristine = tree_digest(site)

    for repo in (site, site / "ultralytics"):
        proc = apply(repo)
        assert proc.returncode == 2
        line = one_line(proc)
        assert "installed package" in line and "pip install -e ." in line and "--allow-installed" in line
        assert tree_digest(site) == pristine

    apply(site, "--allow-installed", check=0)
    # `pip uninstall ultralytics`: every file of the wheel and the dist-info go; mbpatch's new files stay
    wheel_files = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
    for rel in wheel_files:
        (site / rel).unlink(missing_ok=True)
    shutil.rmtree(info)
    assert (site / ADD).is_dir() and (site / YAML).is_file()

    proc = run_cli("revert", "--repo", site, check=0)
    out = flat(proc.stdout)
    assert "package is gone" in out and "original bytes" not in out
    assert not (site / ADD).exists() and not (site / YAML).exists() and not (site / TASKS).exists()
    kept = sorted((site / ".mbpatch").glob("kept-*"))
    assert len(kept) == 1 and str(kept[0]) in out and (kept[0] / TASKS).read_bytes() == (src / TASKS).read_bytes()


# --- 4. orphaned patches (with 9. .git/info/exclude), on a YOLOv5 git clone ----------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    base = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(base + list(args), capture_output=True, text=True, check=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_exclude_and_orphaned_patch(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    (root / ".gitignore").write_text("*.pt\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "v7.0")
    pristine = work_tree(root)

    apply(root, arch="yolov5", env=yolov5_env, check=0)
    exclude = (root / ".git/info/exclude").read_text()
    assert "/.mbpatch/" in exclude.splitlines()
    assert (root / ".gitignore").read_text() == "*.pt\n"  # the tracked .gitignore is never touched
    status = _git(root, "status", "--porcelain", "--untracked-files=all").stdout
    assert ".mbpatch" not in status and "models/yolo.py" in status
    _git(root, "add", "-A")
    assert ".mbpatch" not in _git(root, "diff", "--cached", "--name-only").stdout
    _git(root, "reset", "-q")

    _git(root, "clean", "-fdxq")  # removes .mbpatch/ and mbpatch's new files; yolo.py keeps its edits
    assert not (root / ".mbpatch").exists()
    doc = doctor(root)
    orphan = check(doc, "orphaned patch")
    assert orphan["verdict"] == "fail" and doc["exit"] == 1
    assert "models/yolo.py" in orphan["detail"] and "# mbpatch:" in orphan["detail"] and "git checkout --" in orphan["fix"]
    patched = tree_digest(root)

    proc = apply(root, arch="yolov5", env=yolov5_env)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "models/yolo.py" in line and "no .mbpatch/ journal" in line and "git checkout --" in line
    assert tree_digest(root) == patched

    proc = run_cli("revert", "--repo", root, env=yolov5_env)  # nor does revert claim "nothing to revert"
    assert proc.returncode == 2 and "models/yolo.py" in one_line(proc)
    _git(root, "checkout", "--", ".")  # the way out the message gives
    assert work_tree(root) == pristine
    apply(root, arch="yolov5", env=yolov5_env, check=0)
    run_cli("revert", "--repo", root, env=yolov5_env, check=0)
    assert work_tree(root) == pristine


# --- 5. I/O errors end cleanly -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("err", ["ENOSPC", "EACCES"])
def test_io_error_during_revert_then_second_run_finishes(ultralytics_checkout, err):
    root = ultralytics_checkout(OLD)
    pristine = tree_digest(root)
    apply(root, check=0)
    proc = run_cli("revert", "--repo", root, env={"MBPATCH_CRASH_AT": f"before-write:2:{err}"})  # after 1 restore
    assert proc.returncode == 2
    line = one_line(proc)
    assert "[revert]" in line and "run `mbpatch revert` again" in line and "restoring 1 of 4" in line
    assert not (root / ".mbpatch.lock").exists()
    assert Journal(root).exists()  # the originals are all still there
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == pristine


@pytest.mark.slow
@pytest.mark.parametrize("command", ["apply", "revert"])
def test_full_disk_when_writing_the_lock(ultralytics_checkout, command):
    root = ultralytics_checkout(NEW)
    if command == "revert":
        apply(root, check=0)
    before = tree_digest(root)
    env = {"MBPATCH_CRASH_AT": "lock:1:ENOSPC"}
    proc = apply(root, env=env) if command == "apply" else run_cli("revert", "--repo", root, env=env)
    assert proc.returncode == 2
    line = one_line(proc)
    assert ".mbpatch.lock" in line and "[lock]" in line and "free some disk space" in line
    assert not (root / ".mbpatch.lock").exists()
    assert tree_digest(root) == before
    (apply(root) if command == "apply" else run_cli("revert", "--repo", root)).check_returncode()


@pytest.mark.slow
def test_read_only_file_during_apply(ultralytics_checkout):
    root = ultralytics_checkout(NEW)
    pristine = tree_digest(root)
    proc = apply(root, env={"MBPATCH_CRASH_AT": "before-write:3:EROFS"})
    assert proc.returncode == 2
    line = one_line(proc)
    assert "rolled back" in line and "make the file and its folder writable" in line
    assert tree_digest(root) == pristine


# --- 6. Ctrl-C is all or none ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before-write:1:SIGINT", "after-write:2:SIGINT", "before-rename:4:SIGTERM"])
def test_signal_during_apply_is_deferred(ultralytics_checkout, point):
    root = ultralytics_checkout(NEW)
    pristine = tree_digest(root)
    proc = apply(root, env={"MBPATCH_CRASH_AT": point})
    assert proc.returncode == (143 if point.endswith("SIGTERM") else 130), proc.stderr
    line = one_line(proc)
    assert "interrupted" in line and "applied and journalled" in line
    assert all_written(root)  # all, never a half-patched checkout
    proc = run_cli("revert", "--repo", root, env={"MBPATCH_CRASH_AT": "before-write:2:" + point.rsplit(":", 1)[1]})
    assert proc.returncode in (130, 143) and "the revert had finished" in one_line(proc)
    assert tree_digest(root) == pristine


def test_signal_before_the_write_phase_writes_nothing(ultralytics_checkout):
    root = ultralytics_checkout(NEW)
    pristine = tree_digest(root)
    proc = apply(root, env={"MBPATCH_CRASH_AT": "lock:1:SIGINT"})
    assert proc.returncode == 130
    assert "nothing was written" in one_line(proc)
    assert tree_digest(root) == pristine


# --- 7. validate before writing ----------------------------------------------------------------------------


def _refused_untouched(root: Path, proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    for w in words:
        assert w in line, line
    assert not (root / ".mbpatch").exists() and not (root / ADD).exists()
    return line


@pytest.mark.slow
def test_inputs_checked_before_any_write(ultralytics_checkout, tmp_path):
    import torch

    root = ultralytics_checkout(OLD)
    pristine = tree_digest(root)
    _refused_untouched(root, run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8",
                                     "--python", "/nope/python"), "/nope/python", "[python]")
    _refused_untouched(root, run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8",
                                     "--python", shutil.which("false")), "[python]", "not a working Python")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(hashlib.sha256(b"x").digest() * 64)
    other = tmp_path / "resnet.pth"  # a checkpoint of another network
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    for ckpt, word in ((empty, "empty"), (corrupt, "not a readable torch checkpoint"), (other, "does not fit MobileNetV2")):
        line = _refused_untouched(root, apply(root, "--weights", ckpt), str(ckpt), "[weights]", word)
    assert "missing keys" in line and "conv_stem.weight" in line
    assert tree_digest(root) == pristine

    # the yaml target is someone's file: refused at plan time, before anything is written
    (root / YAML).write_text("# my own yaml\n")
    taken = tree_digest(root)
    proc = apply(root)
    assert proc.returncode == 2 and YAML in one_line(proc)
    assert tree_digest(root) == taken

    proc = run_cli("verify", "--repo", root, "--model", tmp_path / "missing.yaml")
    assert proc.returncode == 2 and "missing.yaml" in one_line(proc)


# --- 8. a user's own backbone class ------------------------------------------------------------------------

USERS_CLASS = '''import torch.nn as nn


class MobileNetV2(nn.Module):  # pasted from a tutorial
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, 2, 1)
'''


@pytest.mark.slow
def test_users_own_class_is_not_shadowed_silently(ultralytics_checkout):
    root = ultralytics_checkout(NEW)
    folder = root / ADD
    folder.mkdir()
    (folder / "MobileNetV2.py").write_text(USERS_CLASS)
    (folder / "__init__.py").write_text("from .MobileNetV2 import *\n")
    (root / "ultralytics/cfg/models/v8/yolov8-mnv2-tutorial.yaml").write_text(
        "nc: 80\nbackbone:\n  - [-1, 1, MobileNetV2, []]\nhead:\n  - [[2, 3, 4], 1, Detect, [nc]]\n")
    users = tree_digest(root)

    proc = apply(root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "your own MobileNetV2" in line and "MobileNetV2.py" in line and "--replace-existing" in line
    assert tree_digest(root) == users

    row = [r for g in doctor(root)["recipes"] for r in g["steps"] if r["recipe"] == "add_modules"][0]
    assert row["state"] == "applied" and row["verdict"] != "fail" and "your own MobileNetV2" in row["detail"]

    apply(root, "--replace-existing", check=0)
    names = [p.name.lower() for p in folder.iterdir() if p.is_file()]
    assert len(names) == len(set(names)), names  # no two files differing only in case
    assert (folder / "MobileNetV2.py").read_text() == USERS_CLASS
    probe = subprocess.run([sys.executable, "-c", "from ultralytics.nn.AddModules import MobileNetV2 as M; "
                            "print('@@MODULE@@' + M.__module__)"], cwd=root, capture_output=True, text=True,
                           env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": ""})
    # Ultralytics logs to stdout on import (a new settings file, ...): read the marked line only
    module = [ln[len("@@MODULE@@"):] for ln in probe.stdout.splitlines() if ln.startswith("@@MODULE@@")]
    assert module == ["ultralytics.nn.AddModules.mbpatch_mobilenetv2"], probe.stdout[-2000:] + probe.stderr[-2000:]
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == users


def test_case_only_name_clash_is_refused_yolov5(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    (root / "models/MobileNetV2.py").write_text(USERS_CLASS)
    users = tree_digest(root)
    proc = apply(root, arch="yolov5", env=yolov5_env)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "models/mobilenetv2.py" in line and "MobileNetV2.py" in line and "differ only in case" in line
    assert tree_digest(root) == users


@pytest.mark.slow
def test_users_own_class_in_common_py_yolov5(tmp_path, yolov5_env):
    """The YOLOv5 tutorials paste the class into models/common.py: mbpatch's import would shadow it."""
    root = make_git(tmp_path / "yolov5", "7.0.14")
    common = root / "models/common.py"
    common.write_text(common.read_text() + "\n\n" + USERS_CLASS.split("\n\n\n", 1)[1])
    users = tree_digest(root)
    proc = apply(root, arch="yolov5", env=yolov5_env)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "models/common.py" in line and "your own MobileNetV2" in line and "--replace-existing" in line
    assert tree_digest(root) == users
    row = [r for g in doctor(root)["recipes"] for r in g["steps"] if r["recipe"] == "add_modules"][0]
    assert row["state"] == "applied" and "your own MobileNetV2" in row["detail"]
    apply(root, "--replace-existing", arch="yolov5", env=yolov5_env, check=0)
    assert (root / "models/mobilenetv2.py").is_file()
    run_cli("revert", "--repo", root, env=yolov5_env, check=0)
    assert tree_digest(root) == users
