"""Stacked applies on real Ultralytics 8.4.190 sources (issue 17): `mbpatch log`, `revert --last` (quilt's pop),
`verify` over every live apply, and the commands mbpatch prints being runnable as printed.

One checkout per module; the applies use --no-verify where the model build is not the point.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest, unpacked

RELEASE = "8.4.190"
STACK = (  # (backbone, arch, task): three families, two tasks, two template files
    ("mobilenetv2", "yolov8", "detect"),
    ("mobilenetv2_050", "yolo11", "detect"),
    ("mobilenetv4_small", "yolov8", "segment"),
)

# saves a checkpoint the way the trainer does (the whole model pickled) for a yaml the checkout builds
SAVE = r"""
import os, sys, yaml, torch
root, cfg, out = sys.argv[1:4]
sys.path.insert(0, root)
from ultralytics.nn.tasks import DetectionModel
d = yaml.safe_load(open(cfg)); d["scale"] = "n"
model = DetectionModel(d, nc=80, verbose=False)
os.makedirs(os.path.dirname(out), exist_ok=True)
torch.save({"model": model, "epoch": 0}, out)
"""
LOAD = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
ck = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
print("@@CLASS@@" + type(ck["model"].model[0]).__name__)
"""


def _py(script, *args, root):
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, cwd=str(root))


def _loaded_class(root, ckpt):
    proc = _py(LOAD, root, ckpt, root=root)
    marked = [ln[len("@@CLASS@@"):] for ln in proc.stdout.splitlines() if ln.startswith("@@CLASS@@")]
    return (marked or [None])[0], proc


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Factory: a new copy of the release's sources."""
    def make(name):
        root = tmp_path_factory.mktemp(name) / f"ultralytics-{RELEASE}"
        shutil.copytree(unpacked("ultralytics", RELEASE, "ultralytics"), root)
        return root
    return make


def _apply(root, backbone, arch, task, *extra):
    return run_cli("apply", "--repo", root, "--backbone", backbone, "--arch", arch, "--task", task, *extra, check=0)


@pytest.mark.slow
def test_log_lists_the_applies_and_revert_last_pops_them_one_by_one(fresh):
    root = fresh("stack")
    digests = [tree_digest(root / "ultralytics")]
    for backbone, arch, task in STACK:
        _apply(root, backbone, arch, task, "--no-verify")
        digests.append(tree_digest(root / "ultralytics"))

    log = json.loads(run_cli("log", "--repo", root, "--json", check=0).stdout)
    assert [(a["id"], a["backbone"], a["family"], a["task"], a["scale"]) for a in log["applies"]] == \
        [(i + 1, b, a, t, "n") for i, (b, a, t) in enumerate(STACK)]
    assert all(a["time"] and a["files"] for a in log["applies"])
    assert "ultralytics/cfg/models/v8/yolov8-seg-mobilenetv4_small.yaml" in log["applies"][2]["files"]
    # wide enough that no cell wraps mid-word (xdist's longer temporary paths widen the path column)
    table = " ".join(run_cli("log", "--repo", root, check=0, env={"COLUMNS": "250"}).stdout.split())
    assert "mobilenetv2_050" in table and "segment" in table

    # pop the newest: the checkout is byte for byte what it was after the second apply
    dry = json.loads(run_cli("revert", "--repo", root, "--last", "--dry-run", "--json", check=0).stdout)
    assert sorted(dry["restore"]) == sorted(log["applies"][2]["files"])
    assert tree_digest(root / "ultralytics") == digests[3]
    done = json.loads(run_cli("revert", "--repo", root, "--last", "--json", check=0).stdout)
    assert done["reverted_entry"] == 3 and done["entries_left"] == 2
    assert tree_digest(root / "ultralytics") == digests[2]
    assert [a["id"] for a in json.loads(run_cli("log", "--repo", root, "--json", check=0).stdout)["applies"]] == [1, 2]

    # the same checks as revert: a file edited since the newest apply wrote it is refused, one line, exit 2
    edited = root / "ultralytics/cfg/models/11/yolo11-mobilenetv2_050.yaml"
    edited.write_text(edited.read_text() + "# my note\n")
    before = tree_digest(root / "ultralytics")
    proc = run_cli("revert", "--repo", root, "--last", check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "yolo11-mobilenetv2_050.yaml" in lines[0] and "--force" in lines[0], proc.stderr
    assert tree_digest(root / "ultralytics") == before
    forced = json.loads(run_cli("revert", "--repo", root, "--last", "--force", "--json", check=0).stdout)
    assert (root / forced["saved"] / "ultralytics/cfg/models/11/yolo11-mobilenetv2_050.yaml").read_text().endswith("# my note\n")
    assert tree_digest(root / "ultralytics") == digests[1]

    run_cli("revert", "--repo", root, "--last", check=0)  # the only one left: the release's bytes, no journal
    assert tree_digest(root / "ultralytics") == digests[0]
    assert not (root / ".mbpatch" / "journal.json").exists()
    assert json.loads(run_cli("log", "--repo", root, "--json", check=0).stdout)["applies"] == []


@pytest.mark.slow
def test_checkpoint_note_names_the_apply_it_needs_runnable_as_printed(fresh):
    """After a stacked revert, the note names the backbone each trained checkpoint holds, with --repo and --arch,
    and the command it prints (run as printed, plus --no-verify) makes the checkpoint load again."""
    root = fresh("ckpt")
    for backbone, arch, task in STACK[:2]:
        _apply(root, backbone, arch, task, "--no-verify")
    ckpt = root / "runs/detect/train/weights/best.pt"
    proc = _py(SAVE, root, root / "ultralytics/cfg/models/11/yolo11-mobilenetv2_050.yaml", ckpt, root=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _loaded_class(root, ckpt)[0] == "MobileNetV2_050"

    doc = json.loads(run_cli("revert", "--repo", root, "--json", check=0).stdout)
    assert doc["checkpoints_needing_patch"] == ["runs/detect/train/weights/best.pt"]
    commands = [c for c in doc["checkpoints_note"].split("`") if c.startswith("mbpatch apply")]
    assert len(commands) == 1, doc["checkpoints_note"]
    argv = shlex.split(commands[0])
    assert argv[argv.index("--backbone") + 1] == "mobilenetv2_050" and argv[argv.index("--arch") + 1] == "yolo11"
    assert _loaded_class(root, ckpt)[0] is None  # what the note warned about

    run_cli(*argv[1:], "--no-verify", check=0)  # from another folder: --repo makes it runnable anywhere
    assert _loaded_class(root, ckpt)[0] == "MobileNetV2_050"


@pytest.mark.slow
def test_verify_builds_every_live_apply_with_a_line_per_stage(fresh, tmp_path):
    """Two stacked applies: verify (no --model) builds both, one row each (issue 17: it built only the last);
    without a terminal, each stage of a build is one line on stderr (it printed nothing for a minute)."""
    root = fresh("verify")
    for backbone, arch, task in STACK[:2]:
        _apply(root, backbone, arch, task, "--no-verify")
    proc = run_cli("verify", "--repo", root, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    rows = [(r["id"], r["backbone"], r["arch"], r["ok"]) for r in doc["applies"]]
    assert rows == [(1, "mobilenetv2", "yolov8", True), (2, "mobilenetv2_050", "yolo11", True)]
    assert doc["applies"][0]["model_yaml"].endswith("v8/yolov8-mobilenetv2.yaml")
    assert doc["applies"][1]["params"] < doc["applies"][1]["stock_params"]  # the half-width MobileNetV2 is lighter
    assert doc["skipped"] == []

    # an interpreter without onnx: --export names the pip line (issue 17: packages surfaced one at a time); and
    # without a terminal (stderr is a pipe here), the stages of the build are lines on stderr, as a CI log shows
    hide = tmp_path / "no-onnx"
    hide.mkdir()
    (hide / "onnx.py").write_text("raise ModuleNotFoundError(\"No module named 'onnx'\", name='onnx')\n")
    py = tmp_path / "python"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={hide} exec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    proc = run_cli("verify", "--repo", root, "--model", doc["applies"][0]["model_yaml"], "--export", "onnx",
                   "--python", py)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"missing package: {py} -m pip install onnx" in " ".join(proc.stdout.split())
    stages = [ln for ln in proc.stderr.splitlines() if ln.startswith("verifying: ")]
    assert len(stages) >= 4 and sum("building the patched model" in ln for ln in stages) == 1, proc.stderr


def test_fetch_checks_its_folder_before_it_downloads(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me\n")
    (tmp_path / "to-full").symlink_to(full, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    for dest in (full, tmp_path / "to-full", tmp_path / "dangling"):
        proc = run_cli("fetch", f"ultralytics=={RELEASE}", dest, check=2)
        assert "download" not in proc.stdout, proc.stdout
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "[fetch]" in lines[0], proc.stderr
    assert sorted(p.name for p in full.iterdir()) == ["mine.txt"]


@pytest.mark.slow
def test_fetch_into_a_symlink_to_an_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "link").symlink_to(empty, target_is_directory=True)
    doc = json.loads(run_cli("fetch", f"ultralytics=={RELEASE}", tmp_path / "link", "--json", check=0).stdout)
    assert doc["version"] == RELEASE
    assert (tmp_path / "link").is_symlink() and (empty / "ultralytics" / "__init__.py").is_file()


@pytest.mark.slow
def test_doctor_prints_one_line_per_apply_when_all_is_well(fresh):
    """Three applies: the recipes section is three lines, not one per recipe and apply (issue 17: 72 rows for six)."""
    from mbpatch.doctor import diagnose

    root = fresh("doctor")
    for backbone, arch, task in STACK:
        _apply(root, backbone, arch, task, "--no-verify")
    rep = diagnose(str(root), environment=False)
    rows = [f for f in rep.findings if f.section == "recipes"]
    assert [f.item for f in rows] == ["mobilenetv2 / yolov8", "mobilenetv2_050 / yolo11", "mobilenetv4_small / yolov8 segment"]
    assert all(f.verdict == "ok" and "applied" in f.detail for f in rows), rows
    assert all(len(g["steps"]) > 1 for g in rep.data["recipes"])  # --json still has every step


def test_missing_package_advice_names_the_requirements_file_or_the_pip_line(tmp_path):
    from conftest_yolov5 import make_git
    from mbpatch.advice import install_line

    root = make_git(tmp_path / "yolov5", "7.0.14")
    (root / "requirements.txt").write_text("# what the checkout needs\npandas>=1.1.4\nIPython  # profiling\n")
    py = sys.executable
    assert install_line("ModuleNotFoundError: No module named 'IPython'", root, py) == \
        f"{py} -m pip install -r {root / 'requirements.txt'}"
    assert install_line("No module named 'onnx'", root, py) == f"{py} -m pip install onnx"
    assert install_line("No module named 'cv2'", root, py) == f"{py} -m pip install opencv-python"
    assert install_line("No module named 'models.repvit'", root, py) is None  # the checkout's own module
    assert install_line("RuntimeError: shapes differ", root, py) is None


@pytest.mark.slow
def test_apply_reports_what_doctor_flags_after_its_summary(fresh, tmp_path, monkeypatch):
    """The checks apply runs beside its verification (doctor.AfterApply): another `ultralytics` on the path
    shadows the patched checkout, so the training snippet apply printed would build the stock code."""
    from mbpatch.checkout import detect
    from mbpatch.doctor import AfterApply

    root = fresh("shadow")
    _apply(root, "mobilenetv2_050", "yolov8", "detect", "--no-verify")
    other = tmp_path / "elsewhere"
    (other / "ultralytics").mkdir(parents=True)
    (other / "ultralytics" / "__init__.py").write_text("__version__ = '0.0.1'\n")
    monkeypatch.setenv("PYTHONPATH", str(other))
    lines = AfterApply(detect(str(root)), None, ["MobileNetV2_050"]).lines()
    shadow = [ln for ln in lines if ln.startswith("shadowing: ")]
    assert len(shadow) == 1 and str(other / "ultralytics") in shadow[0] and "pip install -e" in shadow[0], lines
