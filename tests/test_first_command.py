"""The README's first command, step by step, in a fresh virtual environment the test makes (issue 11).

fetch a pinned release, `pip install -e` mbpatch and the checkout, apply + verify; then `mbpatch doctor`
must exit 0 (before the fix, the README installed `ultralytics` from the index and doctor failed on it).

The machine is a fresh one (issue 17): HOME is an empty folder, except for a `settings.json` that an older
Ultralytics release wrote in its default config folder (`~/.config/Ultralytics`), as on a machine where another
release ran first; no YOLO_CONFIG_DIR is set. Importing Ultralytics then logs a warning on stdout, so the test
reads its probe from a marker line, and checks that mbpatch's own child processes left that file alone.

Installing torch into a new environment is too slow for CI, so the new venv sees this interpreter's packages
through a `.pth` file in its site-packages -- except `ultralytics` and `mbpatch`, which a fresh machine does
not have: each of this interpreter's site-packages folders is mirrored by a folder of links without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "8.4.190"
HIDDEN = ("ultralytics", "mbpatch", "__editable__.mbpatch", "__editable___mbpatch")


def _site_dirs():
    dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    return list(dict.fromkeys(dirs))


def _fresh_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    lines = []
    for k, site in enumerate(_site_dirs()):
        mirror = tmp / f"packages{k}"
        mirror.mkdir()
        for entry in Path(site).iterdir():
            if entry.name.lower().startswith(HIDDEN) or entry.suffix == ".pth":
                continue
            (mirror / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        lines.append(str(mirror))
    (purelib / "zz_this_environment.pth").write_text("\n".join(lines) + "\n")
    return venv


# settings.json as an Ultralytics 8.0 release wrote it (schema 0.0.4: `hub` and `neptune` keys, no `vscode_msg`)
OLD_SETTINGS = {"settings_version": "0.0.4", "datasets_dir": "datasets", "weights_dir": "weights", "runs_dir": "runs",
                "uuid": "0" * 64, "sync": False, "api_key": "", "clearml": True, "comet": True, "dvc": True,
                "hub": True, "mlflow": True, "neptune": True, "raytune": True, "tensorboard": True, "wandb": True}
MARK = "@@PROBE@@"


def _home(tmp: Path) -> Path:
    """An empty HOME but for an older release's Ultralytics settings in its default config folder."""
    home = tmp / "home"
    settings = home / ".config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(OLD_SETTINGS))
    return home


def _run(venv: Path, *cmd, cwd=None, check=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "YOLO_CONFIG_DIR")}
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", YOLO_OFFLINE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", HOME=str(venv.parent / "home"),
               # downloads are not what this test is about: the caches stay where this machine keeps them
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
               MBPATCH_CACHE=os.environ.get("MBPATCH_CACHE") or str(Path.home() / ".cache" / "mbpatch"))
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow
def test_readme_first_command_in_a_fresh_venv_then_doctor_is_green(tmp_path):
    venv = _fresh_venv(tmp_path)
    settings = _home(tmp_path) / ".config" / "Ultralytics" / "settings.json"
    old_settings = settings.read_bytes()
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py, mbpatch = bindir / "python", bindir / "mbpatch"
    work = tmp_path / "work"
    work.mkdir()
    # a fresh machine: neither mbpatch nor ultralytics importable yet
    probe = "import importlib.util as u; print(u.find_spec('ultralytics') is None, u.find_spec('mbpatch') is None)"
    assert _run(venv, py, "-c", probe, cwd=work).stdout.split() == ["True", "True"]

    _run(venv, py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT, cwd=work)
    fetched = _run(venv, mbpatch, "fetch", f"ultralytics=={RELEASE}", "ultralytics", cwd=work)
    checkout = work / "ultralytics"
    assert f"fetched ultralytics {RELEASE}" in fetched.stdout
    log = subprocess.run(["git", "-C", str(checkout), "log", "--oneline"], capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 1
    _run(venv, py, "-m", "pip", "install", "-q", "--no-deps", "-e", "./ultralytics", cwd=work)

    applied = _run(venv, mbpatch, "apply", "--repo", "./ultralytics", "--backbone", "mobilenetv4_small",
                   "--arch", "rtdetr", cwd=work)
    assert "forward passes" in applied.stdout

    doctor = _run(venv, mbpatch, "doctor", "--repo", "./ultralytics", "--json", cwd=work, check=False)
    doc = json.loads(doctor.stdout)
    assert doctor.returncode == 0, doc["problems"]
    shadow = [c for c in doc["checks"] if c["section"] == "shadowing"]
    assert shadow and all(c["verdict"] == "ok" for c in shadow), shadow
    assert "loads this checkout" in shadow[0]["detail"]
    # mbpatch's verification and doctor children used config folders of their own: the user's is untouched
    assert settings.read_bytes() == old_settings

    # the checkout, not another copy, is what `import ultralytics` loads from anywhere in this venv; this first
    # import of the user's own migrates the old settings (and says so on stdout): the probe reads its marker line
    code = f"import json, ultralytics; print({MARK!r} + json.dumps([ultralytics.__file__, ultralytics.__version__]))"
    out = _run(venv, py, "-c", code, cwd=tmp_path).stdout
    where = json.loads(next(ln for ln in out.splitlines() if ln.startswith(MARK))[len(MARK):])
    assert Path(where[0]).resolve() == (checkout / "ultralytics" / "__init__.py").resolve()
    assert where[1] == RELEASE
    assert json.loads(settings.read_text())["settings_version"] != OLD_SETTINGS["settings_version"]


def test_fetch_refuses_a_non_empty_folder_and_an_unknown_release(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me\n")
    for release in ("ultralytics==8.4.190", "torch==2.14.1"):
        proc = run_cli("fetch", release, tmp_path, check=2)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "[fetch]" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.slow
def test_fetch_yolov5_gives_the_pypi_layout(tmp_path):
    """7.0.14's sdist cannot be prepared by pip (its setup.py reads a missing requirements.txt): the wheel's files."""
    proc = run_cli("fetch", "yolov5==7.0.14", tmp_path / "y5", "--json", check=0)
    doc = json.loads(proc.stdout)
    assert doc["version"] == "7.0.14" and doc["commit"]
    assert sorted(p.name for p in (tmp_path / "y5").iterdir()) == [".git", "yolov5"]
    status = subprocess.run(["git", "-C", str(tmp_path / "y5"), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    from mbpatch.checkout import detect

    co = detect(str(tmp_path / "y5"))
    assert (co.kind, co.layout) == ("yolov5", "pypi") and co.version.startswith("7.0.14")
