"""YOLOv5 fixtures: real PyPI `yolov5` sources as installed, and the same code in the git-clone layout.

PyPI layout: `pip download yolov5==V` unpacked; the checkout root is the folder that *contains* `yolov5/`
(what site-packages is for an installed package). Git layout: the contents of `yolov5/` as a repo root,
with every `yolov5.`-prefixed absolute import rewritten to the git clone's `models.` / `utils.` form and
the PyPI-only top-level `__init__.py` left out, which is how the git tree of the same code looks.

Offline note: PyPI 6.0.7 downloads Arial.ttf when `utils/plots.py` is imported (a class-body
`check_font()`). `YOLOV5_CONFIG_DIR` pointing at a folder that already holds a TrueType font named
Arial.ttf (matplotlib's DejaVuSans) keeps it from reaching the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import unpacked

VERSIONS = ("6.0.7", "6.1.9", "6.2.3", "7.0.14")
_PREFIXED = re.compile(r"^(\s*)(from|import)\s+yolov5\.", re.M)
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pypi_source(version: str) -> Path:
    """The cached unpacked wheel: a folder holding `yolov5/`."""
    return unpacked("yolov5", version, "yolov5")


def make_pypi(dest: Path, version: str) -> Path:
    """A writable copy of the installed-package layout; returns the folder that holds `yolov5/`."""
    shutil.copytree(pypi_source(version) / "yolov5", dest / "yolov5")
    return dest


def make_git(dest: Path, version: str) -> Path:
    """The same code rearranged as a git clone (imports `models.` / `utils.`); returns the repo root."""
    shutil.copytree(pypi_source(version) / "yolov5", dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "__init__.py").unlink()  # a git clone's root is not a package
    for path in dest.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        new = _PREFIXED.sub(r"\1\2 ", text)
        if new != text:
            path.write_text(new, encoding="utf-8")
    return dest


# YOLOv5 master after v7.0 loads every checkpoint (train.py's resume, utils/general.py's strip_optimizer,
# models/experimental.py's attempt_load) through the installed Ultralytics' torch_load, not torch.load
MASTER_LOADERS = ("train.py", "segment/train.py", "utils/general.py", "models/experimental.py")
MASTER_IMPORT = "from ultralytics.utils.patches import torch_load\n"


def make_master(dest: Path) -> Path:
    """v7.0's git tree with master's two differences mbpatch reads: models/yolo.py (explicit imports, from
    fixtures/) and the loaders calling `torch_load` (imported from ultralytics.utils.patches) for `torch.load`."""
    make_git(dest, "7.0.14")
    shutil.copyfile(FIXTURES / "yolov5_master_yolo.py", dest / "models" / "yolo.py")
    for rel in MASTER_LOADERS:
        path = dest / rel
        text = path.read_text(encoding="utf-8")
        assert "torch.load(" in text and "\nimport torch\n" in text, rel
        text = text.replace("torch.load(", "torch_load(").replace("\nimport torch\n", "\nimport torch\n" + MASTER_IMPORT, 1)
        path.write_text(text, encoding="utf-8")
    return dest


def make_checkout(tmp_path: Path, version: str, layout: str) -> Path:
    dest = tmp_path / f"{layout}-{version}"
    return make_pypi(dest, version) if layout == "pypi" else make_git(dest, version)


@pytest.fixture(scope="session")
def yolov5_env(tmp_path_factory):
    """Environment for processes that import YOLOv5 offline (font present, settings in a temp folder)."""
    cfg = tmp_path_factory.mktemp("yolov5-config")
    import matplotlib

    font = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    shutil.copyfile(font, cfg / "Arial.ttf")
    return {
        "YOLOV5_CONFIG_DIR": str(cfg),
        "YOLO_CONFIG_DIR": str(cfg),  # the ultralytics package that PyPI 7.0.x imports
        "YOLO_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# A script run by the checkout's interpreter, independent of mbpatch: it builds models the way a user does
# (`Model(cfg)` of the checkout, its root first on sys.path) and reports what a user would look at.
BUILD = r'''
import json, logging, os, sys
root, package, cfgs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, root)
import importlib
import torch
yolo = importlib.import_module(package + ".yolo")
assert os.path.abspath(yolo.__file__).startswith(os.path.abspath(root)), yolo.__file__
tu = sys.modules[package[: -len("models")] + "utils.torch_utils"]
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "summary" in msg.lower() and "layers" in msg:
            lines.append(msg.strip())
tu.LOGGER.addHandler(Keep())
tu.LOGGER.setLevel(logging.INFO)
torch.manual_seed(0)
out = {}
def shapes(o):
    if isinstance(o, torch.Tensor):
        return list(o.shape)
    return [shapes(x) for x in o]
for cfg in cfgs:
    model = yolo.Model(cfg, ch=3, nc=80).eval()
    rec = {
        "summary": lines[-1] if lines else None,
        "layer0": type(model.model[0]).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "modules": len(list(model.modules())),
        "stride": [int(s) for s in model.stride],
        "index": [int(m.i) for m in model.model],
    }
    with torch.no_grad():
        rec["640x640"] = shapes(model(torch.zeros(1, 3, 640, 640)))
        rec["2x672x512"] = shapes(model(torch.zeros(2, 3, 672, 512)))
    out[cfg] = rec
print("@@RESULT@@" + json.dumps(out))
'''


def build_models(root: Path, package: str, cfgs, env: dict) -> dict:
    """Build each yaml with the checkout's Model in a fresh interpreter; return what BUILD reports."""
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(root), package, json.dumps([str(c) for c in cfgs])],
        capture_output=True, text=True, cwd=str(root), env=full, timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise AssertionError(f"building failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def detections(h: int, w: int) -> int:
    """Rows of YOLOv5's inference output: 3 anchors per cell at strides 8, 16 and 32."""
    return sum(3 * (h // s) * (w // s) for s in (8, 16, 32))
