"""The journal is checked, not trusted (issue 14), on a real Ultralytics 8.4.190 checkout.

- a seeded fuzz of journal.json (truncated, wrong types, unknown format and fields, `..`, absolute paths, a path
  through a symlinked folder, hashes that do not match): every one refused with exit 2 and one line, and no
  byte outside `.mbpatch/` changes, inside the checkout or beside it;
- damaged saved originals: refused before any byte is written back;
- symlinks: a planted lock or temp-file link is never written through; a symlinked target is refused up front;
- a stale lock is removed by revert and named by doctor; Ctrl-C / SIGTERM give one line and 130 / 143;
- inputs refused before anything is written (--nc, --head, --data).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import run_cli, tree_digest, unpacked
from mbpatch import cli

V = "8.4.190"
TASKS = "ultralytics/nn/tasks.py"
YAML = "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml"
ADD = "ultralytics/nn/AddModules"
UNTRUSTED = "not a journal mbpatch can trust"


def outside_and_checkout(base: Path) -> dict:
    """Every file under `base` (the checkout and the files beside it), mbpatch's journal folder left out."""
    return {k: v for k, v in tree_digest(base).items() if "/.mbpatch/" not in f"/{k}"}


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def invoke(*args):
    """The CLI in this process (fast, for the many fuzz cases); returns (exit code, output)."""
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    """(base, root, journal text): 8.4.190 under base/, patched once, with base/precious.txt beside it."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))
    base = tmp_path_factory.mktemp("trust")
    root = base / "checkout"
    shutil.copytree(unpacked("ultralytics", V, "ultralytics"), root)
    (base / "precious.txt").write_text("mine\n")
    (base / "elsewhere").mkdir()
    (base / "elsewhere" / "tasks.py").write_text("# not the checkout's\n")
    pristine = tree_digest(root)
    code, out = invoke("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify")
    assert code == 0, out
    os.symlink(base / "elsewhere", root / "ultralytics" / "linked")  # a symlinked folder inside the checkout
    return base, root, (root / ".mbpatch/journal.json").read_text(), pristine


def _mutations(journal: dict, rng: random.Random):
    """(name, journal text) pairs: seeded damage of every kind the issue lists."""
    def copy():
        return json.loads(json.dumps(journal))

    text = json.dumps(journal, indent=1)
    for _ in range(6):
        cut = rng.randrange(1, len(text) - 1)
        yield f"truncated at {cut}", text[:cut]
    yield "empty file", ""
    yield "a list", "[]"
    for fmt in (0, 3, "2", None, 2.5):
        j = copy()
        j["format"] = fmt
        yield f"format {fmt!r}", json.dumps(j)
    j = copy()
    j["hello"] = 1
    yield "unknown top-level field", json.dumps(j)
    wrong = [1, "x", None, [], {}, True, -1, 1.5]
    entry_fields = sorted(journal["entries"][0])
    for _ in range(12):
        j = copy()
        key = rng.choice(entry_fields)
        value = rng.choice(wrong)
        if isinstance(j["entries"][0][key], type(value)) and not isinstance(value, bool):
            continue
        j["entries"][0][key] = value
        yield f"entry field {key} = {value!r}", json.dumps(j)
    file_fields = sorted(journal["entries"][0]["files"][0])
    for _ in range(10):
        j = copy()
        f = rng.choice(j["entries"][0]["files"])
        key = rng.choice(file_fields)
        f[key] = rng.choice(wrong)
        yield f"file field {key} = {f[key]!r}", json.dumps(j)
    for bad in ("../precious.txt", "ultralytics/../../precious.txt", "/etc/passwd", "ultralytics//nn/tasks.py",
                "./ultralytics/nn/tasks.py", "ultralytics/linked/tasks.py", ".mbpatch/journal.json", "",
                "C:/x.py", "ultralytics\\nn\\tasks.py"):
        for field in ("path", "dirs"):
            j = copy()
            if field == "path":
                rng.choice(j["entries"][0]["files"])["path"] = bad
            else:
                j["entries"][0]["dirs"] = [bad]
            yield f"{field} {bad!r}", json.dumps(j)
    for _ in range(4):
        j = copy()
        f = rng.choice([f for f in j["entries"][0]["files"] if not f["new"]] or j["entries"][0]["files"])
        key = "sha_before" if not f["new"] else "sha_after"
        f[key] = f[key][:-1] + ("0" if f[key][-1] != "0" else "1")
        yield f"{key} of {f['path']} does not match", json.dumps(j)
    j = copy()
    j["entries"].append(copy()["entries"][0])
    yield "the same entry id twice", json.dumps(j)
    j = copy()
    j["entries"][0]["state"] = "half"
    yield "unknown state", json.dumps(j)
    j = copy()
    del j["entries"][0]["files"][0]["sha_after"]
    yield "a file record without sha_after", json.dumps(j)


@pytest.mark.slow
def test_fuzzed_journals_are_refused_and_nothing_is_written(patched):
    base, root, good, _ = patched
    journal = json.loads(good)
    before = outside_and_checkout(base)
    rng = random.Random(14)
    cases = list(_mutations(journal, rng))
    assert len(cases) >= 60
    matched = 0
    for name, text in cases:
        (root / ".mbpatch/journal.json").write_text(text)
        for command in (("revert",), ("revert", "--force"), ("revert", "--dry-run")):
            code, out = invoke(*command, "--repo", root)
            assert code == 2, f"{name}: `{' '.join(command)}` exit {code}\n{out}"
            line = one_line(out)
            assert any(w in line for w in (UNTRUSTED, "does not match the sha256", "newer mbpatch")), f"{name}: {line}"
            matched += "does not match" in line
        assert outside_and_checkout(base) == before, f"{name}: a byte outside .mbpatch/ changed"
    assert matched == 3 * 4  # the four sha mismatches name the hash, the rest the journal
    (root / ".mbpatch/journal.json").write_text(good)


def test_damaged_original_is_never_written_back(patched):
    base, root, good, _ = patched
    original = root / ".mbpatch/originals/1" / TASKS
    saved = original.read_bytes()
    before = outside_and_checkout(base)
    try:
        with open(original, "r+b") as fh:  # `truncate -s 50000`
            fh.truncate(50000)
        code, out = invoke("revert", "--repo", root, "--force")
        assert code == 2
        line = one_line(out)
        assert f"{TASKS}: [revert]" in line and "does not match the sha256 recorded" in line
        assert "--from-markers" in line and "git" in line
        assert outside_and_checkout(base) == before  # tasks.py keeps its patched bytes: nothing written
        assert (root / ".mbpatch/journal.json").read_text() == good
    finally:
        original.write_bytes(saved)


def test_crafted_journal_cannot_reach_outside(patched, tmp_path):
    """A `.mbpatch/` copied from elsewhere naming ../precious.txt: refused, precious.txt untouched."""
    base, root, good, _ = patched
    journal = json.loads(good)
    journal["entries"][0]["files"].append({"path": "../precious.txt", "new": True, "sha_before": None,
                                           "sha_after": "0" * 64})
    (root / ".mbpatch/journal.json").write_text(json.dumps(journal))
    try:
        proc = run_cli("revert", "--repo", root, env={"YOLO_CONFIG_DIR": str(tmp_path)})
        assert proc.returncode == 2
        assert UNTRUSTED in one_line(proc.stderr) and "'../precious.txt'" in proc.stderr
        assert (base / "precious.txt").read_text() == "mine\n"
    finally:
        (root / ".mbpatch/journal.json").write_text(good)


def test_good_journal_reverts_after_the_fuzz(patched):
    """The same checkout, its journal put back: revert gives the original tree (the fuzz changed nothing)."""
    base, root, good, pristine = patched
    os.unlink(root / "ultralytics" / "linked")
    code, out = invoke("revert", "--repo", root)
    assert code == 0, out
    assert tree_digest(root) == pristine


# --- symlinks ---------------------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path):
    root = tmp_path / "checkout"
    shutil.copytree(unpacked("ultralytics", V, "ultralytics"), root)
    (tmp_path / "victim.txt").write_text("victim\n")
    return root


def _apply(root, *extra):
    return invoke("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", *extra)


def test_planted_links_are_never_written_through(fresh):
    root = fresh
    victim = root.parent / "victim.txt"
    pristine = tree_digest(root)
    os.symlink(victim, root / ".mbpatch.lock")
    tmp_name = root / "ultralytics/nn/.tasks.py.mbpatch-tmp"
    os.symlink(victim, tmp_name)
    code, out = _apply(root)
    assert code == 0, out
    assert victim.read_text() == "victim\n"
    assert not (root / TASKS).is_symlink() and "# mbpatch:" in (root / TASKS).read_text()
    assert not os.path.lexists(tmp_name) and not os.path.lexists(root / ".mbpatch.lock")
    code, out = invoke("revert", "--repo", root)
    assert code == 0, out
    assert tree_digest(root) == pristine and victim.read_text() == "victim\n"


def test_symlinked_target_is_refused_up_front(fresh):
    """Decision: a file apply would patch that is a symlink (or lies under one) is refused, never patched
    through: revert could not give the link back as it was."""
    root = fresh
    real = root.parent / "tasks-real.py"
    shutil.move(root / TASKS, real)
    os.symlink(real, root / TASKS)
    before = tree_digest(root.parent)
    code, out = _apply(root)
    assert code == 2
    line = one_line(out)
    assert TASKS in line and "symbolic link" in line and "nothing was changed" in line
    assert tree_digest(root.parent) == before and not (root / ".mbpatch").exists()
    assert (root / TASKS).is_symlink()


# --- locks and signals ------------------------------------------------------------------------------------


def test_stale_lock_is_named_by_doctor_and_removed_by_revert(fresh, tmp_path):
    from mbpatch.doctor import diagnose, to_json

    root = fresh
    pristine = tree_digest(root)
    (root / ".mbpatch.lock").write_text("999999")  # a killed run's: nobody holds its flock
    doc = to_json(diagnose(str(root), environment=False))
    lock = [c for c in doc["checks"] if c["item"] == "lock"]
    assert lock and ".mbpatch.lock" in lock[0]["detail"] and "killed" in lock[0]["detail"]
    proc = run_cli("revert", "--repo", root, env={"YOLO_CONFIG_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert not (root / ".mbpatch.lock").exists()
    assert tree_digest(root) == pristine


def test_sigterm_while_taking_the_lock(fresh, tmp_path):
    root = fresh
    pristine = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify",
                   env={"MBPATCH_CRASH_AT": "lock:1:SIGTERM", "YOLO_CONFIG_DIR": str(tmp_path)})
    assert proc.returncode == 143
    line = one_line(proc.stderr)
    assert "interrupted (SIGTERM)" in line and "nothing was written" in line
    assert tree_digest(root) == pristine and not (root / ".mbpatch.lock").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_at_startup_is_one_line(fresh, tmp_path, sig):
    """A signal while mbpatch is still importing: one line, 128 + signal, no traceback, nothing written."""
    root = fresh
    pristine = tree_digest(root)
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mbpatch", "apply", "--repo", str(root), "--backbone", "mobilenetv2",
                             "--arch", "yolov8", "--no-verify"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    time.sleep(0.3)  # while it imports (any moment must give the same outcome)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # the run finished before the signal: nothing to judge; revert
        run_cli("revert", "--repo", root, check=0)
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err + out
    # without a terminal, verify prints a line per stage it began (issue 17); the interruption is one line
    assert len([ln for ln in err.splitlines() if ln.strip() and not ln.startswith("verifying: ")]) == 1, err
    assert not (root / ".mbpatch.lock").exists()
    if (root / ".mbpatch").exists():  # stopped after the write phase began: the patch is whole; revert
        run_cli("revert", "--repo", root, check=0)
    assert tree_digest(root) == pristine


# --- inputs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,step,words", [
    (("--arch", "yolov8", "--nc", "10000000"), "nc", "more classes"),
    (("--arch", "yolov8", "--head", "light"), "head", "RT-DETR neck"),
    (("--arch", "yolov8", "--data", "/missing/data.yaml"), "data", "no such dataset yaml"),
])
def test_inputs_refused_before_any_write(fresh, args, step, words):
    root = fresh
    pristine = tree_digest(root)
    code, out = invoke("apply", "--repo", root, "--backbone", "mobilenetv2", "--no-verify", *args)
    assert code == 2
    line = one_line(out)
    assert f"[{step}]" in line and words in line
    assert tree_digest(root) == pristine and not (root / ".mbpatch").exists()


# --- revert never leaves a checkout that cannot import ----------------------------------------------------


def test_upgrade_with_patched_file_brought_back_is_refused(tmp_path):
    """Applied on 8.3.100, then upgraded to 8.4.190 (`git reset --hard`: the untracked AddModules/ and yaml
    stay) and a `git stash pop` brings back a patched tasks.py: revert would keep tasks.py (the upgrade's
    business) and delete the AddModules/ it imports. It refuses, nothing written; after the printed way out
    (tasks.py back to the release's), revert finishes and the tree is 8.4.190's."""
    root = tmp_path / "checkout"
    shutil.copytree(unpacked("ultralytics", "8.3.100", "ultralytics"), root)
    code, out = _apply(root)
    assert code == 0, out
    stashed = (root / TASKS).read_text() + "# my experiment\n"
    new = unpacked("ultralytics", V, "ultralytics")
    shutil.rmtree(root / "ultralytics" / "cfg")  # the upgrade's files, over the old ones (untracked ones stay)
    shutil.copytree(new / "ultralytics", root / "ultralytics", dirs_exist_ok=True)
    (root / TASKS).write_text(stashed)
    before = tree_digest(root)
    code, out = invoke("revert", "--repo", root)
    assert code == 2
    line = one_line(out)
    assert f"{TASKS}: [revert]" in line and "still imports" in line and f"git checkout -- {TASKS}" in line
    assert tree_digest(root) == before
    shutil.copy(new / TASKS, root / TASKS)  # the way out the line prints
    code, out = invoke("revert", "--repo", root)
    assert code == 0, out
    now = {k: v for k, v in tree_digest(root).items() if not k.startswith(".mbpatch/")}
    want = tree_digest(new)
    assert {k: v for k, v in now.items() if k in want} == want
    assert not (root / ADD).exists() and not (root / YAML).exists()


# --- revert --from-markers ------------------------------------------------------------------------------


@pytest.mark.slow
def test_from_markers_refuses_another_release_and_recovers_after_git_clean(fresh):
    """`--source` of another release is refused, --force or not; after `git clean -fdx` (journal, yaml and
    AddModules/ gone) the markers left in tasks.py are enough to give back the release's exact bytes."""
    root = fresh
    pristine = tree_digest(root)
    code, out = _apply(root)
    assert code == 0, out
    for gone in (".mbpatch", ADD):
        shutil.rmtree(root / gone)
    (root / YAML).unlink()
    before = tree_digest(root)
    other = unpacked("ultralytics", "8.3.100", "ultralytics")
    for force in ((), ("--force",)):
        code, out = invoke("revert", "--repo", root, "--from-markers", "--source", other, *force)
        assert code == 2
        line = one_line(out)
        assert "[from-markers]" in line and "8.3.100" in line and "not this checkout's 8.4.190" in line
        assert tree_digest(root) == before
    code, out = invoke("revert", "--repo", root, "--from-markers", "--source", unpacked("ultralytics", V, "ultralytics"))
    assert code == 0, out
    assert tree_digest(root) == pristine


# --- a user's class of the same name ----------------------------------------------------------------------


@pytest.mark.slow
def test_users_class_imported_into_tasks_is_refused(fresh):
    """`class MobileNetV2` of the user's in nn/modules/block.py, imported into tasks.py: apply would shadow
    it with mbpatch's. Refused up front, nothing written; --replace-existing applies and reverts exactly."""
    root = fresh
    block = root / "ultralytics/nn/modules/block.py"
    block.write_text(block.read_text() + "\n\nclass MobileNetV2:  # the user's own\n    pass\n")
    tasks = root / TASKS
    text = tasks.read_text()
    at = text.index("\nfrom ultralytics.nn.modules import")
    tasks.write_text(text[:at] + "\nfrom ultralytics.nn.modules.block import MobileNetV2" + text[at:])
    users = tree_digest(root)
    code, out = _apply(root)
    assert code == 2
    line = one_line(out)
    assert f"{TASKS}: [add_modules]" in line and "own MobileNetV2" in line and "--replace-existing" in line
    assert tree_digest(root) == users and not (root / ".mbpatch").exists()
    code, out = _apply(root, "--replace-existing")
    assert code == 0, out
    code, out = invoke("revert", "--repo", root)
    assert code == 0, out
    assert tree_digest(root) == users


def _children(pid: int) -> list:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
def test_sigterm_during_verify_ends_the_child_too(fresh, tmp_path):
    """`kill <mbpatch>` while verify's child builds the model: one line, exit 143, and the child is gone."""
    root = fresh
    code, out = _apply(root)
    assert code == 0, out
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mbpatch", "verify", "--repo", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    child = []
    while not child and time.monotonic() < deadline and proc.poll() is None:
        child = _children(proc.pid)
        time.sleep(0.05)
    assert child, "verify started no child process"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted (SIGTERM)" in err
    # without a terminal, verify prints a line per stage it began (issue 17); the interruption is one line
    assert len([ln for ln in err.splitlines() if ln.strip() and not ln.startswith("verifying: ")]) == 1, err
    time.sleep(0.2)
    for pid in child:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z", f"child {pid} outlived mbpatch"
    assert not (root / ".mbpatch.lock").exists()


def test_sigint_at_the_lock_when_started_with_sigint_ignored(fresh, tmp_path):
    """A shell script's background job starts with SIGINT ignored; a loaded machine's test runner can too
    (issue 17: `lock:1:SIGINT` then ran through to "4 file(s) written"). mbpatch installs its own handler
    first, so the Ctrl-C still stops it before anything is written, whatever the parent ignored."""
    root = fresh
    pristine = tree_digest(root)
    proc = subprocess.run([sys.executable, "-m", "mbpatch", "apply", "--repo", str(root), "--backbone", "mobilenetv2",
                           "--arch", "yolov8", "--no-verify"], capture_output=True, text=True,
                          env={**os.environ, "MBPATCH_CRASH_AT": "lock:1:SIGINT", "YOLO_CONFIG_DIR": str(tmp_path)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 130, proc.stdout[-500:] + proc.stderr
    assert "nothing was written" in one_line(proc.stderr)
    assert tree_digest(root) == pristine and not (root / ".mbpatch.lock").exists()


@pytest.mark.slow
def test_killed_apply_is_not_called_half_reverted_nor_an_edit(fresh, tmp_path):
    """Killed after two of four files: doctor says the apply was interrupted (never "half reverted"); a re-apply
    does not call the yaml it never wrote "changed since mbpatch last patched it"; revert gives the tree back."""
    from mbpatch.doctor import diagnose, to_json

    root = fresh
    pristine = tree_digest(root)
    env = {"YOLO_CONFIG_DIR": str(tmp_path)}
    args = ("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify")
    assert run_cli(*args, env={**env, "MBPATCH_CRASH_AT": "before-write:3"}).returncode == 99
    items = {c["item"]: c for c in to_json(diagnose(str(root), environment=False))["checks"]}
    assert "half reverted" not in items and "killed half-way" in items["apply #1"]["detail"]
    proc = run_cli(*args, env=env, check=0)
    assert "changed since mbpatch last patched it" not in proc.stdout.replace("\n", "")
    run_cli("revert", "--repo", root, env=env, check=0)
    assert tree_digest(root) == pristine
