"""Nothing lost: crashes at every write, bad inputs, hand edits and concurrent runs (SPEC §8).

Every test works on a fresh copy of real Ultralytics sources and compares sha256 digests of the whole
checkout: "zero bytes changed" and "identical bytes after revert" are checked file by file.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest, unpacked

from mbpatch.doctor import diagnose, to_json
from mbpatch.journal import Journal, sha256

V = "8.2.103"  # a release with every recipe (RT-DETR, RepC3 before the upstream fix)
APPLY = ("apply", "--backbone", "mobilenetv2", "--no-verify")
CRASHED = 99  # os._exit code of the MBPATCH_CRASH_AT hook


def apply(root: Path, arch: str = "yolov8", env=None, check=None):
    return run_cli(*APPLY, "--repo", root, "--arch", arch, env=env, check=check)


def one_line(proc) -> str:
    """The single line a refusal prints on stderr (nothing on stdout)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    assert proc.stdout.strip() == "", proc.stdout
    return lines[0]


def without_mbpatch(digest: dict) -> dict:
    return {k: v for k, v in digest.items() if not k.startswith(".mbpatch")}


# --- 2. crash safety: a kill before and after every file write and journal update -------------------------

POINTS = ("before-write", "after-write", "before-rename", "journal", "after-journal")


def _check_doctor_explains(root: Path, pristine: dict) -> None:
    """doctor's account of a killed apply must match the files on disk."""
    doc = to_json(diagnose(str(root), environment=False))
    journal = doc["journal"]
    if not Journal(root).exists():
        # killed before the journal recorded anything: no file of the checkout may have changed
        assert without_mbpatch(tree_digest(root)) == without_mbpatch(pristine)
        if (root / ".mbpatch").exists():
            assert any(c["item"] == "journal" and c["verdict"] == "warn" and "changed no file" in c["detail"]
                       for c in doc["checks"]), doc["checks"]
        return
    if not journal["pending"]:
        # killed while recording a stacked apply (nothing changed), or right after the apply was marked done
        if without_mbpatch(tree_digest(root)) != without_mbpatch(pristine):
            last = Journal(root).entries()[-1]
            assert last["state"] == "done"
            assert all(sha256((root / f["path"]).read_bytes()) == f["sha_after"] for f in last["files"])
        assert any(c["item"] == "journal" and c["verdict"] == "ok" for c in doc["checks"]), doc["checks"]
        return
    assert doc["exit"] == 1
    assert len(journal["pending"]) == 1, journal
    pending = journal["pending"][0]
    entry = [e for e in Journal(root).entries() if e["id"] == pending["id"]][0]
    files = {f["path"]: f for f in entry["files"]}
    assert sorted(pending["written"] + pending["not_written"]) == sorted(files)
    for rel in pending["written"]:
        assert sha256((root / rel).read_bytes()) == files[rel]["sha_after"], rel
    for rel in pending["not_written"]:
        now = (root / rel).read_bytes() if (root / rel).is_file() else None
        assert sha256(now) == files[rel]["sha_before"], rel
    temps = [rel for rel in files if (root / rel).with_name(f".{Path(rel).name}.mbpatch-tmp").exists()]
    assert sorted(journal["leftovers"]) == temps
    line = [c for c in doc["checks"] if c["item"] == f"apply #{pending['id']}"][0]
    assert line["verdict"] == "fail" and "interrupted" in line["detail"] and "mbpatch revert" in line["fix"]


def _crash_sweep(root: Path, point: str, arch: str, before_each=None) -> int:
    """Kill `apply` at the 1st, 2nd, ... time it reaches `point` until it gets through; check each state."""
    pristine = tree_digest(root)
    n = 0
    while True:
        n += 1
        if before_each:
            before_each()
        start = tree_digest(root)
        proc = apply(root, arch, env={"MBPATCH_CRASH_AT": f"{point}:{n}"})
        if proc.returncode == 0:  # the point was reached fewer than n times: nothing left to kill
            run_cli("revert", "--repo", root, check=0)
            assert tree_digest(root) == pristine
            return n - 1
        assert proc.returncode == CRASHED, proc.stderr
        _check_doctor_explains(root, start)
        run_cli("revert", "--repo", root, check=0)
        assert tree_digest(root) == pristine, f"revert after a kill at {point}:{n} left differences"
        assert not (root / ".mbpatch").exists() and not (root / ".mbpatch.lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_crash_during_first_apply(ultralytics_checkout, point):
    root = ultralytics_checkout(V)
    killed = _crash_sweep(root, point, "yolov8")
    # 4 files (2 new AddModules files, tasks.py, the yaml); renames: 1 original + 2 journal saves + 4 files
    assert killed == {"before-write": 4, "after-write": 4, "before-rename": 7, "journal": 2, "after-journal": 2}[point]


@pytest.mark.slow
@pytest.mark.parametrize("point", ("before-write", "journal"))
def test_crash_during_stacked_apply(ultralytics_checkout, point):
    """A second apply (rtdetr on top of yolov8) killed half-way: revert undoes both."""
    root = ultralytics_checkout(V)
    killed = _crash_sweep(root, point, "rtdetr", before_each=lambda: apply(root, "yolov8", check=0))
    assert killed >= 2


def test_revert_killed_half_way_is_finished_by_the_next_revert(ultralytics_checkout):
    root = ultralytics_checkout(V)
    pristine = tree_digest(root)
    apply(root, "rtdetr", check=0)
    proc = run_cli("revert", "--repo", root, env={"MBPATCH_CRASH_AT": "before-rename:2"})  # after 1 restore
    assert proc.returncode == CRASHED
    doc = to_json(diagnose(str(root), environment=False))
    assert any(c["item"] == "half reverted" and "mbpatch revert" in c["fix"] for c in doc["checks"]), doc["checks"]
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == pristine


def test_disk_full_rolls_back_every_write(ultralytics_checkout):
    """ENOSPC on the 3rd checkout file: the two written before it are rolled back, the journal is dropped."""
    root = ultralytics_checkout(V)
    before = tree_digest(root)
    # renames: 1 original (tasks.py) + 1 journal save + AddModules/mobilenetv2.py, __init__.py, then tasks.py
    proc = apply(root, env={"MBPATCH_CRASH_AT": "before-rename:5:ENOSPC"})
    assert proc.returncode == 2
    line = one_line(proc)
    assert "ultralytics/nn/tasks.py" in line and "[register]" in line
    assert "No space left on device" in line and "rolled back" in line and "free some disk space" in line
    assert tree_digest(root) == before
    assert not list(root.rglob("*.mbpatch-tmp"))


# --- 3. bad inputs: exit 2, one line naming the file and the step, zero bytes changed ----------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


TASKS = "ultralytics/nn/tasks.py"


def _yolov5_checkout(tmp_path: Path) -> Path:
    from mbpatch.checkout import detect

    dst = tmp_path / "yolov5-7.0.14"
    shutil.copytree(unpacked("yolov5", "7.0.14", "yolov5"), dst)
    assert detect(str(dst)).kind == "yolov5"
    return dst


def case(name, setup, args, file, step, hint, version=V):
    return pytest.param(setup, args, file, step, hint, version, id=name)


def _nothing(root, tmp):
    return root


CASES = [
    case("missing-path", lambda r, t: t / "no-such-folder", ("--arch", "yolov8"), "no-such-folder", "detect", "pass --repo"),
    case("empty-folder", lambda r, t: (t / "empty").mkdir() or t / "empty", ("--arch", "yolov8"), "empty", "detect",
         "not an Ultralytics or YOLOv5 checkout"),
    case("unrelated-project", lambda r, t: _unrelated(t), ("--arch", "yolov8"), "myproject", "detect",
         "not an Ultralytics or YOLOv5 checkout"),
    case("file-not-folder", lambda r, t: r / "ultralytics" / "__init__.py", ("--arch", "yolov8"), "__init__.py", "detect",
         "is a file, not a folder"),
    case("no-version-line", lambda r, t: _edit(r / "ultralytics/__init__.py", "__version__", "VERSION") or r,
         ("--arch", "yolov8"), "ultralytics/__init__.py", "detect", "no __version__"),
    case("unknown-backbone", _nothing, ("--arch", "yolov8", "--backbone", "resnet50"), "", "backbone", "choose one of"),
    case("unknown-arch", _nothing, ("--arch", "yolov9"), "", "arch", "choose one of"),
    case("bad-nc", _nothing, ("--arch", "yolov8", "--nc", "0"), "", "nc", "at least 1"),
    case("arch-release-lacks-rtdetr", _nothing, ("--arch", "rtdetr"), "", "arch", "8.0.111", version="8.0.50"),
    case("arch-release-lacks-yolo11", _nothing, ("--arch", "yolo11"), "", "arch", "upgrade"),
    case("yolov5-arch-on-ultralytics", _nothing, ("--arch", "yolov5"), "", "arch", "it builds: rtdetr, yolov8, yolo11"),
    case("ultralytics-arch-on-yolov5", lambda r, t: _yolov5_checkout(t), ("--arch", "yolov8"), "yolov5", "arch",
         "it builds: yolov5"),
    case("syntax-error", lambda r, t: _edit(r / TASKS, "def parse_model(", "def parse_model((") or r,
         ("--arch", "yolov8"), TASKS, "register", "syntax error"),
    case("parse-model-renamed", lambda r, t: _edit(r / TASKS, "def parse_model(", "def build_from_yaml(") or r,
         ("--arch", "yolov8"), TASKS, "register", "def parse_model"),
    case("parse-model-restructured", lambda r, t: _edit(r / TASKS, "for i, (f, n, m, args) in", "for i, layer in") or r,
         ("--arch", "yolov8"), TASKS, "register", "restore the stock loop"),
    case("yaml-name-taken", lambda r, t: _write(r / "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml",
                                                "# my own experiment\nnc: 3\n", r),
         ("--arch", "yolov8"), "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml",
         "model_yaml", "rename or delete it"),
    case("own-addmodules-file", lambda r, t: _own_addmodules(r), ("--arch", "yolov8"),
         "ultralytics/nn/AddModules/mobilenetv2.py", "add_modules", "rename your file"),
    case("corrupted-journal", lambda r, t: _journal(r, "{ this is not json"), ("--arch", "yolov8"), ".mbpatch/journal.json",
         "journal", "corrupted"),
    case("journal-from-newer-mbpatch", lambda r, t: _journal(r, json.dumps({"format": 99, "mbpatch": "9.0", "entries": []})),
         ("--arch", "yolov8"), ".mbpatch/journal.json", "journal", "upgrade mbpatch"),
    case("disk-full-on-journal", lambda r, t: r, ("--arch", "yolov8", "--env", "MBPATCH_CRASH_AT=before-rename:1:ENOSPC"),
         ".mbpatch/journal.json", "journal", "free some disk space"),
]


def _write(path: Path, text: str, root: Path) -> Path:
    path.write_text(text)
    return root


def _unrelated(tmp: Path) -> Path:
    root = tmp / "myproject"
    (root / "mypkg" / "nn").mkdir(parents=True)
    (root / "setup.py").write_text("from setuptools import setup\nsetup(name='mypkg')\n")
    (root / "mypkg" / "__init__.py").write_text("__version__ = '1.0'\n")
    (root / "mypkg" / "nn" / "layers.py").write_text("import torch\n")
    return root


def _own_addmodules(root: Path) -> Path:
    folder = root / "ultralytics/nn/AddModules"
    folder.mkdir()
    (folder / "mobilenetv2.py").write_text("import torch.nn as nn\n\n\nclass MyNet(nn.Module):\n    pass\n")
    return root


def _journal(root: Path, text: str) -> Path:
    (root / ".mbpatch").mkdir()
    (root / ".mbpatch/journal.json").write_text(text)
    return root


@pytest.mark.parametrize("setup, args, file, step, hint, version", CASES)
def test_bad_input(ultralytics_checkout, tmp_path, setup, args, file, step, hint, version):
    checkout = ultralytics_checkout(version)
    repo = setup(checkout, tmp_path)
    args, env = list(args), {}
    if "--env" in args:
        k = args.index("--env")
        key, _, value = args[k + 1].partition("=")
        env[key] = value
        del args[k : k + 2]
    if "--backbone" not in args:
        args += ["--backbone", "mobilenetv2"]
    watched = repo if repo.is_dir() else checkout
    before = tree_digest(watched)
    proc = run_cli("apply", "--repo", repo, "--no-verify", *args, env=env)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    line = one_line(proc)
    assert line.startswith("mbpatch: ")
    assert f"[{step}]" in line, line
    where = line[len("mbpatch: "): line.index(f" [{step}]")]
    assert where.endswith(":") and (file in where if file else str(repo) in where), line
    assert hint in line, line
    assert tree_digest(watched) == before


def test_bad_input_json(ultralytics_checkout):
    root = ultralytics_checkout(V)
    proc = run_cli("apply", "--repo", root, "--backbone", "nope", "--arch", "yolov8", "--json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["step"] == "backbone" and doc["file"] == str(root) and "nope" in doc["error"]


def test_target_file_not_writable(ultralytics_checkout):
    """Root ignores permission bits, so the file is made immutable (chattr +i), which binds root too."""
    root = ultralytics_checkout(V)
    tasks = root / TASKS
    if subprocess.run(["chattr", "+i", str(tasks)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        before = tree_digest(root)
        proc = apply(root)
        assert proc.returncode == 2
        line = one_line(proc)
        assert f"{TASKS}: [register]" in line and "not writable" in line and "make it writable" in line
        assert tree_digest(root) == before
        doc = to_json(diagnose(str(root), environment=False))
        assert any(c["item"] == "tasks" and c["verdict"] == "fail" and "not writable" in c["detail"] for c in doc["checks"])
    finally:
        subprocess.run(["chattr", "-i", str(tasks)], check=True)


def test_revert_refuses_unreadable_journal(ultralytics_checkout):
    root = ultralytics_checkout(V)
    apply(root, check=0)
    (root / ".mbpatch/journal.json").write_text("{ broken")
    before = tree_digest(root)
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert ".mbpatch/journal.json: [journal]" in line and "corrupted" in line and ".mbpatch/originals/" in line
    assert tree_digest(root) == before


def test_revert_refuses_when_an_original_copy_is_missing(ultralytics_checkout):
    root = ultralytics_checkout(V)
    apply(root, check=0)
    (root / ".mbpatch/originals/1" / TASKS).unlink()
    before = tree_digest(root)
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert f"{TASKS}: [revert]" in line and "original copy is missing" in line and "git" in line
    assert tree_digest(root) == before


# --- 4. hand edits ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hand_edits_refused_then_forced(ultralytics_checkout):
    root = ultralytics_checkout(V)
    pristine = tree_digest(root)
    apply(root, check=0)
    yaml_rel = "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml"
    tasks, yaml_file = root / TASKS, root / yaml_rel
    tasks.write_text(tasks.read_text() + "\n# my experiment: log every layer\n")
    yaml_file.write_text(yaml_file.read_text().replace("nc: 80", "nc: 3"))
    edited = {TASKS: tasks.read_bytes(), yaml_rel: yaml_file.read_bytes()}
    before = tree_digest(root)

    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "[revert]" in line and TASKS in line and yaml_rel in line and "--force" in line
    assert tree_digest(root) == before

    doc = to_json(diagnose(str(root), environment=False))
    assert sorted(doc["journal"]["edited"]) == sorted(edited)

    proc = run_cli("revert", "--repo", root, "--force", check=0)
    saved = sorted((root / ".mbpatch").glob("edited-*"))
    assert len(saved) == 1 and str(saved[0]) in proc.stdout.replace("\n", "")
    for rel, data in edited.items():
        assert (saved[0] / rel).read_bytes() == data
    after = tree_digest(root)
    assert without_mbpatch(after) == pristine
    assert all(k.startswith(".mbpatch/edited-") for k in after if k not in pristine)

    # the saved copies outlive a later apply + revert
    apply(root, check=0)
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == after


@pytest.mark.slow
def test_deleted_files(ultralytics_checkout):
    """A deleted file mbpatch created is no loss (revert goes on); a deleted patched file needs --force."""
    root = ultralytics_checkout(V)
    pristine = tree_digest(root)
    apply(root, "rtdetr", check=0)
    (root / "ultralytics/nn/AddModules/__init__.py").unlink()
    (root / "ultralytics/nn/modules/block.py").unlink()
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 2
    line = one_line(proc)
    assert "ultralytics/nn/modules/block.py" in line and "AddModules" not in line
    run_cli("revert", "--repo", root, "--force", check=0)
    assert without_mbpatch(tree_digest(root)) == pristine


# --- 5. two runs at once ----------------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from mbpatch.engine import Lock
lock = Lock(Path(sys.argv[1]))
lock.__enter__()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.__exit__(None, None, None)
"""


def _hold(root: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_second_run_refuses_while_the_first_holds_the_lock(ultralytics_checkout):
    root = ultralytics_checkout(V)
    holder = _hold(root, 60)
    try:
        before = tree_digest(root)
        for cmd in (("apply", "--arch", "yolov8", "--backbone", "mobilenetv2", "--no-verify"), ("revert",)):
            t0 = time.monotonic()
            proc = run_cli(*cmd, "--repo", root, env={"MBPATCH_LOCK_WAIT": "1"})
            assert proc.returncode == 2
            line = one_line(proc)
            assert ".mbpatch.lock: [lock]" in line and f"pid {holder.pid}" in line and "wait for it to finish" in line
            assert time.monotonic() - t0 >= 1.0  # it waited before refusing
            assert tree_digest(root) == before
        doc = to_json(diagnose(str(root), environment=False))
        assert any(c["item"] == "lock" and f"pid {holder.pid}" in c["detail"] for c in doc["checks"])
    finally:
        holder.kill()
        holder.wait()


def test_second_run_waits_for_a_short_holder(ultralytics_checkout):
    root = ultralytics_checkout(V)
    holder = _hold(root, 1.0)
    proc = apply(root)  # default wait: 5 s
    holder.wait()
    assert proc.returncode == 0, proc.stderr
    assert len(Journal(root).entries()) == 1


@pytest.mark.slow
def test_lock_of_a_killed_run_is_taken_over(ultralytics_checkout):
    root = ultralytics_checkout(V)
    holder = _hold(root, 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (root / ".mbpatch.lock").exists()  # the file stays, nobody holds it
    doc = to_json(diagnose(str(root), environment=False))
    assert any(c["item"] == "lock" and c["verdict"] == "info" for c in doc["checks"])
    # a run that waited for the dead holder would wait the whole 120 s and then refuse
    t0 = time.monotonic()
    apply(root, check=0, env={"MBPATCH_LOCK_WAIT": "120"})
    assert time.monotonic() - t0 < 60
    assert not (root / ".mbpatch.lock").exists()


@pytest.mark.slow
def test_two_applies_at_once(ultralytics_checkout):
    root = ultralytics_checkout(V)
    pristine = tree_digest(root)
    cmd = [sys.executable, "-m", "mbpatch", *APPLY, "--repo", str(root), "--arch", "yolov8"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("nothing to change: already applied" in o for o, _ in outs) == 1
    assert len(Journal(root).entries()) == 1
    patched = tree_digest(root)
    apply(root, check=0)
    assert tree_digest(root) == patched
    run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == pristine
