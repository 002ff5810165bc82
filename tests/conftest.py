"""Shared fixtures: real Ultralytics / YOLOv5 sources, downloaded once into a cache outside the repo.

`pip download --no-deps ultralytics==V` gives the wheel; its `ultralytics/` folder is what a checkout holds.
The cache is `$MBPATCH_CACHE` (default `~/.cache/mbpatch`), so a clean clone re-uses earlier downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MBPATCH_CACHE", Path.home() / ".cache" / "mbpatch"))


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most four (each worker's children build models of 1-2 GB)."""
    return max(1, min(os.cpu_count() or 1, 4))


@contextlib.contextmanager
def cache_lock(name: str):
    """Serialise filling one cache entry across xdist workers and concurrent runs (POSIX flock)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: one run at a time
        yield
        return
    with open(CACHE / f".lock-{name}", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def wheel(dist: str, version: str) -> Path:
    """The cached wheel (or sdist) of dist==version, downloaded with pip when missing."""
    with cache_lock(f"{dist}-{version}"):
        return _wheel(dist, version)


def _wheel(dist: str, version: str) -> Path:
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = dist.replace("-", "_")
    for pattern in (f"{stem}-{version}-*.whl", f"{dist}-{version}-*.whl", f"{stem}-{version}.tar.gz"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{dist}=={version}", "-d", str(folder)],
        check=True,
    )
    return _wheel(dist, version)


def unpacked(dist: str, version: str, package: str) -> Path:
    """A read-only-by-convention unpacked copy of the wheel's `package/` folder; returns its parent."""
    dest = CACHE / "src" / f"{dist}-{version}"
    if (dest / package).is_dir():
        return dest
    with cache_lock(f"{dist}-{version}"):
        return _unpack(dist, version, package, dest)


def _unpack(dist: str, version: str, package: str, dest: Path) -> Path:
    if not (dest / package).is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(_wheel(dist, version)) as z:
            for name in z.namelist():
                if name.startswith(package + "/"):
                    z.extract(name, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


def tree_digest(root: Path) -> dict:
    """path -> sha256 of every file under root, ignoring Python bytecode caches."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session", autouse=True)
def _session_yolo_config(tmp_path_factory):
    """Ultralytics' settings folder for what runs outside a test (module-scoped fixtures): never the user's
    ~/.config/Ultralytics, whose settings.json another release may have written (issue 17)."""
    before = os.environ.get("YOLO_CONFIG_DIR")
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("yolo-config-session"))
    yield
    if before is None:
        os.environ.pop("YOLO_CONFIG_DIR", None)
    else:
        os.environ["YOLO_CONFIG_DIR"] = before


@pytest.fixture(autouse=True)
def _own_yolo_config(tmp_path_factory, monkeypatch):
    """Each test (and every process it starts, mbpatch's verification children included) gets its own
    Ultralytics config folder, so no settings.json written by another release logs to a stdout a test reads."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))


@pytest.fixture
def ultralytics_checkout(tmp_path):
    """Factory: a fresh, writable copy of Ultralytics V's sources (a checkout root holding `ultralytics/`)."""

    def make(version: str) -> Path:
        src = unpacked("ultralytics", version, "ultralytics")
        dst = tmp_path / f"ultralytics-{version}"
        shutil.copytree(src, dst)
        return dst

    return make


def run_cli(*args, check=None, env=None):
    """Run `python -m mbpatch ...` as a user would; returns the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", "mbpatch", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


# Builds the model the way a user does, with the checkout first on sys.path, and compares the backbone's
# state (parameters and BatchNorm statistics) with the checkpoint's.
BACKBONE_VS_CHECKPOINT = r"""
import sys, json, yaml, torch
root, cfg, ckpt_path, kind = sys.argv[1:5]
sys.path.insert(0, root)
if kind == "yolov5":
    from models.yolo import Model
    model = Model(cfg, ch=3, nc=80)
else:
    from ultralytics.nn.tasks import DetectionModel
    d = yaml.safe_load(open(cfg)); d["scale"] = "n"
    model = DetectionModel(d, nc=80, verbose=False)
ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
own = model.model[0].state_dict()
same = [k for k, v in own.items() if k in ckpt and torch.equal(v.float(), ckpt[k].float())]
stats = [k for k in own if k.endswith(("running_mean", "running_var"))]
print(json.dumps({"backbone_keys": len(own), "equal": len(same), "missing": [k for k in own if k not in ckpt],
                  "stats": len(stats), "moved": [k for k in stats if k in ckpt and not torch.equal(own[k], ckpt[k])]}))
"""


def backbone_vs_checkpoint(root, cfg, ckpt, kind, env=None):
    """What BACKBONE_VS_CHECKPOINT reports for the model `cfg` built by the checkout at `root`."""
    full = {**os.environ, **(env or {})}
    full.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", BACKBONE_VS_CHECKPOINT, str(root), str(cfg), str(ckpt), kind],
                          capture_output=True, text=True, cwd=root, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
