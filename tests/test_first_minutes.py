"""Issue 11, items 3-6 and 8 on real Ultralytics sources: a snippet that pastes as printed (80 columns), `--json`
carrying it, `--data`, progress while verifying, the heavier-than-stock line, wording, and the import cost of
`--help` / `list`."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import run_cli, unpacked

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _copy(tmp_path_factory, version: str, name: str) -> Path:
    dst = tmp_path_factory.mktemp(name) / f"ultralytics-{version}"
    shutil.copytree(unpacked("ultralytics", version, "ultralytics"), dst)
    return dst


def _snippet(stdout: str) -> str:
    """The lines printed after 'train it', up to the elapsed-time line."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("train it"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("verified in"))
    return "\n".join(lines[start + 1:end])


def _run_with_stderr_on_a_terminal(args, env):
    """Run the CLI with stdout piped and stderr on a pseudo-terminal (where a person sees the status line)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mbpatch", *map(str, args)], stdout=subprocess.PIPE, stderr=slave,
                            env=env, text=True)
    os.close(slave)
    chunks = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = proc.communicate()
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, stdout, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def repvit_yolov8n(tmp_path_factory):
    """yolov8n + repvit_m1 on 8.4.190 at 80 columns, with --data and a terminal on stderr."""
    if os.name == "nt":
        pytest.skip("pseudo-terminals are POSIX")
    repo = _copy(tmp_path_factory, "8.4.190", "repvit")
    data = repo.parent / "my-data.yaml"
    data.write_text("path: /data/mine\ntrain: images/train\nval: images/val\nnames: {0: thing}\n")
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    code, stdout, stderr = _run_with_stderr_on_a_terminal(
        ["apply", "--repo", repo, "--backbone", "repvit_m1", "--arch", "yolov8", "--data", data], env)
    assert code == 0, stdout + stderr
    return repo, data, stdout, stderr


@pytest.mark.slow
def test_snippet_at_80_columns_parses_and_names_the_full_yaml_and_data(repvit_yolov8n):
    repo, data, stdout, _ = repvit_yolov8n
    snippet = _snippet(stdout)
    tree = ast.parse(snippet)  # pastes as printed: no line cut at 80 columns
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    cfg = repo / "ultralytics/cfg/models/v8"
    assert str(cfg / "yolov8n-repvit_m1.yaml") in strings  # the scale is read from the name, as for yolov8n.yaml
    assert (cfg / "yolov8-repvit_m1.yaml").is_file()
    assert str(data.resolve()) in strings
    assert f"load it as {cfg / 'yolov8n-repvit_m1.yaml'}" in " ".join(stdout.split())


@pytest.mark.slow
def test_heavier_than_stock_line_and_row_4_note(repvit_yolov8n):
    _, _, stdout, _ = repvit_yolov8n
    flat = " ".join(stdout.split())
    m = re.search(r"heavier than the stock model: \+(\d+)% parameters, \+(\d+)% GFLOPs", flat)
    assert m, flat[-3000:]
    # the same percentages as the comparison table printed above it
    params = re.search(r"parameters\s*[│|]\s*([\d,]+)\s*[│|]\s*([\d,]+)", stdout)
    stock, patched = (int(params.group(k).replace(",", "")) for k in (1, 2))
    assert int(m.group(1)) == round(100 * (patched - stock) / stock)
    scales = re.search(r"at scale\(s\) ([nsmlx, ]+): try --scale ([nsmlx])", flat)
    assert scales, flat[-2000:]
    named = [s.strip() for s in scales.group(1).split(",")]
    assert "n" not in named and "x" in named  # heavier at n (seen above); yolov8x's backbone has 30M parameters
    assert flat.count("row 4 is the backbone") == 1


@pytest.mark.slow
def test_progress_names_the_stages_on_a_terminal(repvit_yolov8n):
    _, _, stdout, stderr = repvit_yolov8n
    # building takes a fraction of a second (the status may skip it); importing and the forward passes do not
    for stage in ("importing the checkout", "stock model: GFLOPs at 640", "patched model: GFLOPs at 640"):
        assert stage in stderr, stderr[-2000:]
    assert "@@MBPATCH" not in stderr + stdout
    assert re.search(r"^verified in \d+\.\d s$", stdout, re.M)


@pytest.mark.slow
def test_json_carries_the_snippet(repvit_yolov8n):
    repo, _, _, _ = repvit_yolov8n
    proc = run_cli("verify", "--repo", repo, "--json", check=0)
    doc = json.loads(proc.stdout)
    snippet = doc["training_snippet"]
    ast.parse(snippet)
    assert str(repo / "ultralytics/cfg/models/v8/yolov8n-repvit_m1.yaml") in snippet
    assert doc["model_yaml_to_load"].endswith("yolov8n-repvit_m1.yaml")
    assert "coco8.yaml" in snippet and "# " in snippet.splitlines()[0]  # no --data: a note says which line to edit
    assert doc["heavier_than_stock"] is True


@pytest.mark.slow
def test_no_heavier_line_when_lighter(tmp_path_factory):
    """yolov8s + mobilenetv4_small: measured lighter than yolov8s (parameters and GFLOPs), so no such line."""
    repo = _copy(tmp_path_factory, "8.4.190", "mnv4s")
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--scale", "s",
                   check=0, env={"COLUMNS": "80"})
    assert "heavier" not in proc.stdout
    doc = json.loads(run_cli("verify", "--repo", repo, "--json", check=0).stdout)
    v = doc["verification"]
    assert v["patched"]["params"] < v["stock"]["params"] and v["patched"]["gflops"] < v["stock"]["gflops"]
    assert doc["heavier_than_stock"] is False
    ast.parse(_snippet(proc.stdout))


def test_dry_run_says_would_apply(tmp_path_factory):
    repo = _copy(tmp_path_factory, "8.2.103", "dry")
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8", "--dry-run", check=0)
    rows = [ln for ln in proc.stdout.splitlines() if "register" in ln]
    assert rows and "would apply" in rows[0] and " applied " not in rows[0].replace("would apply", "")
    assert not (repo / ".mbpatch").exists()


def test_revert_dry_run_force_wording(tmp_path_factory):
    repo = _copy(tmp_path_factory, "8.2.103", "revert")
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    tasks = repo / "ultralytics/nn/tasks.py"
    tasks.write_text(tasks.read_text() + "\n# my edit\n")
    plain = " ".join(run_cli("revert", "--repo", repo, "--dry-run", check=0).stdout.split())
    forced = " ".join(run_cli("revert", "--repo", repo, "--dry-run", "--force", check=0).stdout.split())
    assert "needs --force" in plain
    assert "needs --force" not in forced and "--force would first save your copies" in forced
    assert tasks.read_text().endswith("# my edit\n")  # dry runs write nothing


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"]])
def test_help_and_list_do_not_import_libcst(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mbpatch", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "libcst" not in imported and "torch" not in imported


def test_list_reads_the_recipes_it_would_import():
    """`list` reads recipe names with `ast`; they are the ones the packages define, in order."""
    from mbpatch.recipe_index import read
    from mbpatch.recipes import ultralytics, yolov5

    for kind, mod in (("ultralytics", ultralytics), ("yolov5", yolov5)):
        rows, archs = read(kind)
        assert rows == [dict(name=r.name, step=r.step) for r in mod.RECIPES]
        assert archs == list(mod.ARCHS)


def test_doctor_checkout_part_does_not_import_libcst(tmp_path_factory):
    repo = _copy(tmp_path_factory, "8.2.103", "doctor")
    code = ("import sys; from mbpatch.doctor import _checkout, Report; from mbpatch.checkout import detect; "
            f"r = Report(); _checkout(detect({str(repo)!r}), r); print('libcst' in sys.modules, len(r.findings))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and int(out[1]) > 3


@pytest.mark.slow
def test_mobilenetv2_050_makes_yolov8n_lighter(tmp_path_factory):
    """The half-width MobileNetV2 (timm mobilenetv2_050) is the backbone for scale n: fewer parameters and
    GFLOPs than the stock yolov8n, measured by the checkout's own build, so apply prints no heavier line."""
    repo = _copy(tmp_path_factory, "8.4.190", "mnv2h")
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2_050", "--arch", "yolov8", "--json", check=0)
    doc = json.loads(proc.stdout)
    v = doc["verification"]
    assert v["patched"]["params"] < v["stock"]["params"] and v["patched"]["gflops"] < v["stock"]["gflops"]
    assert doc["heavier_than_stock"] is False
