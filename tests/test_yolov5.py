"""YOLOv5 checkouts (SPEC §4): real PyPI `yolov5` sources in both layouts, both tutorial styles.

Every model is built by a separate interpreter with the checkout first on sys.path, by the checkout's own
`Model` class, the way a user builds it; the numbers asserted are the ones YOLOv5 itself prints.
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
from click.testing import CliRunner

from conftest import run_cli, tree_digest
from conftest_yolov5 import (  # noqa: F401 (yolov5_env is a fixture)
    FIXTURES,
    VERSIONS,
    build_models,
    detections,
    make_checkout,
    make_git,
    make_pypi,
    yolov5_env,
)
from mbpatch.checkout import detect
from mbpatch.cli import main

FAMILIES = ("mobilenetv2", "mobilenetv4_small", "repvit_m1")  # one backbone of each template family
# All three families are applied (stacked) on every checkout; to keep the file within its time budget on two
# shared cores each checkout then builds one of them, in rotation, so that every family is built on both
# layouts and on both code generations (class Model up to 6.1.x, BaseModel from 6.2.3). Set
# MBPATCH_YOLOV5_ALL_FAMILIES=1 to build all three everywhere (24 models).
ALL_FAMILIES = os.environ.get("MBPATCH_YOLOV5_ALL_FAMILIES") == "1"
MATRIX = [(v, layout) for v in VERSIONS for layout in ("pypi", "git")]
LAYER0 = {"mobilenetv2": "MobileNetV2", "mobilenetv4_small": "MobileNetV4ConvSmall", "repvit_m1": "RepViTM1"}
WHOLE = ("add_modules", "register", "channel_index", "forward_once", "flops", "model_yaml")
BLOCK = ("block_module", "block_register", "block_yaml")


def cli(*args):
    """`mbpatch ... --json` in this process; returns (exit code, parsed document)."""
    result = CliRunner().invoke(main, [*map(str, args), "--json"])
    try:
        doc = json.loads(result.output)
    except json.JSONDecodeError:
        raise AssertionError(f"exit {result.exit_code}, not JSON:\n{result.output}\n{result.exception!r}") from None
    return result.exit_code, doc


def statuses(doc):
    return {s["recipe"]: s["status"] for s in doc["steps"]}


def package_of(layout: str) -> str:
    return "models" if layout == "git" else "yolov5.models"


def check_outputs(rec, where):
    """A YOLOv5 detector's eval outputs: (boxes, three raw maps) for the two input shapes."""
    boxes, maps = rec["640x640"]
    assert boxes == [1, detections(640, 640), 85], where
    assert [m[2:4] for m in maps] == [[80, 80], [40, 40], [20, 20]], where
    boxes, maps = rec["2x672x512"]
    assert boxes == [2, detections(672, 512), 85], where
    assert [m[:4] for m in maps] == [[2, 3, 84, 64], [2, 3, 42, 32], [2, 3, 21, 16]], where
    assert rec["stride"] == [8, 16, 32], where


# --- detection ---------------------------------------------------------------------------------------------


def test_detects_layouts_from_the_code(tmp_path):
    for version in VERSIONS:
        site = make_pypi(tmp_path / f"site-{version}", version)
        for given in (site, site / "yolov5"):  # the folder holding the package, or the package itself
            co = detect(str(given))
            assert (co.kind, co.layout, co.root) == ("yolov5", "pypi", site.resolve()), given
            assert co.files["yolo"] == "yolov5/models/yolo.py" and co.files["torch_utils"] == "yolov5/utils/torch_utils.py"
            assert co.version.startswith(version)
        git = make_git(tmp_path / f"git-{version}", version)
        co = detect(str(git))
        assert (co.kind, co.layout, co.root, co.files["yolo"]) == ("yolov5", "git", git.resolve(), "models/yolo.py")
        # a folder named yolov5 that is a git clone is still a git clone: the import lines decide
        (tmp_path / f"clone-{version}").mkdir()
        renamed = git.rename(tmp_path / f"clone-{version}" / "yolov5")
        co = detect(str(renamed))
        assert (co.layout, co.root) == ("git", renamed.resolve())
        co = detect(str(renamed.parent))  # the folder that holds the clone
        assert (co.layout, co.root) == ("git", renamed.resolve())
    # the PyPI numbers do not follow the git tags: 6.1.9 still has one Model class, 6.2.3 is v7.0 code
    assert detect(str(tmp_path / "site-6.1.9")).version == "6.1.9 (v6.0-v6.1 code: class Model)"
    assert detect(str(tmp_path / "site-6.2.3")).version == "6.2.3 (v6.2-v7.0 code: class BaseModel)"

    master = make_git(tmp_path / "master", "7.0.14")
    shutil.copyfile(FIXTURES / "yolov5_master_yolo.py", master / "models" / "yolo.py")
    co = detect(str(master))
    assert (co.layout, co.version) == ("git", "git (post-v7.0 master code: explicit imports)")

    (tmp_path / "empty").mkdir()
    code, doc = cli("apply", "--repo", tmp_path / "empty", "--backbone", "repvit_m1", "--arch", "yolov5")
    assert code == 2 and "not an Ultralytics or YOLOv5 checkout" in doc["error"]


# --- whole backbone, every version and layout ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("version,layout", MATRIX, ids=[f"{v}-{layout}" for v, layout in MATRIX])
def test_whole_backbones_build_forward_and_revert(tmp_path, yolov5_env, version, layout):
    root = make_checkout(tmp_path, version, layout)
    original = tree_digest(root)
    models = "yolov5/models" if layout == "pypi" else "models"

    for k, backbone in enumerate(FAMILIES):
        code, doc = cli("apply", "--repo", root, "--backbone", backbone, "--arch", "yolov5", "--no-verify")
        assert code == 0, doc
        st = statuses(doc)
        assert all(st[r] == "not needed" for r in BLOCK), st
        assert st["add_modules"] == st["model_yaml"] == "applied", st
        # the first apply patches yolo.py and torch_utils.py; later ones only add their names to the branch
        assert st["register"] == "applied" and all(
            st[r] == ("applied" if k == 0 else "already applied") for r in ("channel_index", "forward_once", "flops")
        ), st

    yolo = (root / models / "yolo.py").read_text()
    common = "from yolov5.models.common import *" if layout == "pypi" else "from models.common import *"
    imported = "from yolov5.models.repvit import" if layout == "pypi" else "from models.repvit import"
    assert yolo.index(common) < yolo.index(imported) < yolo.index("def parse_model")
    owner = "class Model(" if version in ("6.0.7", "6.1.9") else "class BaseModel("
    assert yolo.index(owner) < yolo.index('if hasattr(m, "backbone")') < yolo.index("def parse_model")

    # idempotent: the same apply again changes zero bytes
    patched = tree_digest(root)
    code, doc = cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov5", "--no-verify")
    assert code == 0 and doc["changed"] == [] and "applied" not in statuses(doc).values()
    assert tree_digest(root) == patched

    chosen = FAMILIES if ALL_FAMILIES else [FAMILIES[MATRIX.index((version, layout)) % len(FAMILIES)]]
    yamls = [root / models / f"yolov5n-{b}.yaml" for b in chosen]
    assert all(y.is_file() for y in [root / models / f"yolov5n-{b}.yaml" for b in FAMILIES])
    built = build_models(root, package_of(layout), yamls, yolov5_env)
    for backbone, y in zip(chosen, yamls):
        rec = built[str(y)]
        where = f"{version} {layout} {backbone}"
        assert rec["layer0"] == LAYER0[backbone], where
        assert rec["index"][:3] == [4, 5, 6], where  # the backbone fills slots 0-4, SPPF is 5
        check_outputs(rec, where)
        assert re.search(r"[\d.]+ GFLOPs$", rec["summary"] or ""), (where, rec["summary"])

    repo = root / "yolov5" if layout == "pypi" else root  # revert finds the checkout from the package folder too
    code, doc = cli("revert", "--repo", repo)
    assert code == 0 and doc["entries"] == 3
    assert tree_digest(root) == original
    assert not (root / ".mbpatch").exists()


# --- the headline command, with verification; the RepViT tutorial's yaml -----------------------------------

TUTORIAL_REPVIT = """\
# the RepViT tutorial's model yaml, as users have it
nc: 80  # number of classes
depth_multiple: 0.33  # model depth multiple
width_multiple: 0.25  # layer channel multiple
anchors:
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16
  - [116,90, 156,198, 373,326]  # P5/32

backbone:
  # [from, number, module, args]
  [[-1, 1, repvit_m1, []],  # 0-4 P1/2 P2/4 P3/8 P4/16 P5/32
   [-1, 1, SPPF, [1024, 5]],  # 5
  ]

head:
  [[-1, 1, Conv, [512, 1, 1]],  # 6
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 7
   [[-1, 3], 1, Concat, [1]],  # 8 cat backbone P4
   [-1, 3, C3, [512, False]],  # 9

   [-1, 1, Conv, [256, 1, 1]],  # 10
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 11
   [[-1, 2], 1, Concat, [1]],  # 12 cat backbone P3
   [-1, 3, C3, [256, False]],  # 13 (P3/8-small)

   [-1, 1, Conv, [256, 3, 2]],  # 14
   [[-1, 10], 1, Concat, [1]],  # 15 cat head P4
   [-1, 3, C3, [512, False]],  # 16 (P4/16-medium)

   [-1, 1, Conv, [512, 3, 2]],  # 17
   [[-1, 6], 1, Concat, [1]],  # 18 cat head P5
   [-1, 3, C3, [1024, False]],  # 19 (P5/32-large)

   [[13, 16, 19], 1, Detect, [nc, anchors]],  # 20 Detect(P3, P4, P5)
  ]
"""


@pytest.mark.slow
def test_headline_command_verifies_and_the_repvit_tutorial_yaml_builds(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    original = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov5", "--json", env=yolov5_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    v = doc["verification"]
    assert v["ok"] and v["package_file"] == str(root.resolve() / "models" / "yolo.py")
    patched, stock = v["patched"], v["stock"]
    assert patched["summary"][0]["i"] == 4 and patched["summary"][0]["module"] == "RepViTM1"
    assert [r["i"] for r in patched["summary"]][-1] == 20
    assert patched["forward"]["2x672x512"][0] == [2, detections(672, 512), 85]
    assert patched["forward"]["640x480"][0] == [1, detections(480, 640), 85]
    assert stock["params"] == 1872157  # stock yolov5n, as YOLOv5 prints it
    assert patched["gflops"] > stock["gflops"] > 0
    assert patched["yolov5_summary"].startswith("YOLOv5n-repvit_m1 summary:") and patched["yolov5_summary"].endswith("GFLOPs")

    tutorial = root / "models" / "yolov5n-repvit-tutorial.yaml"
    tutorial.write_text(TUTORIAL_REPVIT)
    rec = build_models(root, "models", [tutorial], yolov5_env)[str(tutorial)]
    assert rec["layer0"] == "RepViTM1" and rec["index"][:2] == [4, 5]
    check_outputs(rec, "tutorial yaml")
    # the yaml mbpatch wrote is the tutorial's model
    assert rec["params"] == patched["params"] and rec["modules"] == patched["layers"]

    tutorial.unlink()  # the user's own file: not mbpatch's to remove
    proc = run_cli("revert", "--repo", root)
    assert proc.returncode == 0, proc.stderr
    assert tree_digest(root) == original


# --- per-block MobileNetV2 (the MobileNetV2 tutorial) ------------------------------------------------------

BLOCK_CHECK = r'''
import json, logging, sys
sys.path.insert(0, ".")
import torch, yaml
from models import yolo
from models.common import Conv
import utils.torch_utils as tu
lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())
tu.LOGGER.addHandler(Keep())
model = yolo.Model("models/yolov5-mobilenetv2-blocks.yaml").eval()
blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
out = {
    "summary": [l for l in lines if "summary" in l][-1],
    "blocks": len(blocks),
    "relu6": sum(isinstance(m, torch.nn.ReLU6) for b in blocks for m in b.modules()),
    "linear": sum(isinstance(m, torch.nn.Identity) for b in blocks for m in b.modules()),
    "string_act": type(Conv(3, 8, act="ReLU").act).__name__,
}
with torch.no_grad():
    out["2x672x512"] = list(model(torch.zeros(2, 3, 672, 512))[0].shape)
d = yaml.safe_load(open("models/yolov5-mobilenetv2-blocks.yaml"))
d["width_multiple"] = 0.5
half = yolo.Model(d)
out["half_widths"] = [half.model[k].conv[-1].conv.out_channels for k in (1, 2, 12)]
print("@@RESULT@@" + json.dumps(out))
'''


@pytest.mark.slow
def test_per_block_mobilenetv2_has_the_tutorial_numbers(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    original = tree_digest(root)
    code, doc = cli("apply", "--repo", root, "--backbone", "MobileNetV2", "--arch", "yolov5", "--style", "blocks", "--no-verify")
    assert code == 0, doc
    st = statuses(doc)
    assert all(st[r] == "applied" for r in BLOCK) and all(st[r] == "not needed" for r in WHOLE), st
    yolo = (root / "models" / "yolo.py").read_text()
    assert "from models.mobilenetv2_blocks import InvertedResidual" in yolo
    assert "if m in {\n                Conv, InvertedResidual, GhostConv," in yolo  # the channel-scaled set

    env = {**os.environ, **yolov5_env}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", BLOCK_CHECK], cwd=root, capture_output=True, text=True, env=env)
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[0][len("@@RESULT@@"):])
    # the tutorial's model summary, printed by YOLOv5 v7.0 itself
    assert out["summary"] == (
        "YOLOv5-mobilenetv2-blocks summary: 347 layers, 5662397 parameters, 5662397 gradients, 11.5 GFLOPs"
    )
    assert out["blocks"] == 17  # 1 + 2 + 3 + 4 + 3 + 3 + 1 blocks of MobileNetV2 Table 1
    # real activations: ReLU6 after each expansion (16 blocks with t = 6) and each depthwise conv (17);
    # the projection is linear. YOLOv5's Conv(act='ReLU') would have given no activation at all:
    assert (out["relu6"], out["linear"], out["string_act"]) == (33, 17, "Identity")
    assert out["2x672x512"] == [2, detections(672, 512), 85]
    # registered in the channel-scaled set: width_multiple 0.5 halves the blocks (16 -> 8, 24 -> 16, 320 -> 160)
    assert out["half_widths"] == [8, 16, 160]

    code, doc = cli("revert", "--repo", root)
    assert code == 0 and tree_digest(root) == original


# --- later master: explicit import list, no visualize --------------------------------------------------------


@pytest.mark.slow
def test_master_explicit_imports_both_styles(tmp_path, yolov5_env):
    root = make_git(tmp_path / "yolov5", "7.0.14")
    shutil.copyfile(FIXTURES / "yolov5_master_yolo.py", root / "models" / "yolo.py")
    original = tree_digest(root)
    before = (root / "models" / "yolo.py").read_text()

    code, doc = cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov5", "--no-verify")
    assert code == 0 and all(statuses(doc)[r] == "applied" for r in WHOLE), doc
    code, doc = cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolov5", "--style", "blocks", "--no-verify")
    assert code == 0 and all(statuses(doc)[r] == "applied" for r in BLOCK), doc

    yolo = (root / "models" / "yolo.py").read_text()
    end_of_list = yolo.index("    GhostConv,\n)\n") + len("    GhostConv,\n)\n")
    ours = yolo[end_of_list:].splitlines()[:2]
    assert sorted(ours) == sorted([
        "from models.mobilenetv4 import MobileNetV4ConvSmall, mobilenetv4_small  # mbpatch: backbone added by mbpatch",
        "from models.mobilenetv2_blocks import InvertedResidual  # mbpatch: MobileNetV2 block added by mbpatch",
    ])
    assert "elif m in {\n            Conv,\n            InvertedResidual,\n            GhostConv,\n" in yolo  # after our branch
    assert "def _forward_once(self, x, profile=False):" in yolo and "feature_visualization" not in yolo
    # nothing lost or reordered: every original line is still there, in order (moved lines are re-indented,
    # and the chain's first `if` became an `elif` after the backbone branch)
    def norm(line):
        return re.sub(r"^elif ", "if ", line.strip())

    kept = iter(norm(line) for line in yolo.splitlines())
    assert all(any(norm(line) == other for other in kept) for line in before.splitlines())

    yamls = [root / "models" / "yolov5n-mobilenetv4_small.yaml", root / "models" / "yolov5-mobilenetv2-blocks.yaml"]
    built = build_models(root, "models", yamls, yolov5_env)
    whole, blocks = built[str(yamls[0])], built[str(yamls[1])]
    assert whole["layer0"] == "MobileNetV4ConvSmall" and whole["index"][:2] == [4, 5]
    assert blocks["layer0"] == "Conv" and blocks["params"] == 5662397
    for rec in (whole, blocks):
        check_outputs(rec, "master fixture")

    code, doc = cli("revert", "--repo", root)
    assert code == 0 and doc["entries"] == 2 and tree_digest(root) == original


# --- dry run, refusals, revert safety (the shared engine) ----------------------------------------------------


def test_dry_run_refusals_and_revert_safety(tmp_path):
    site = make_pypi(tmp_path / "site", "6.1.9")
    original = tree_digest(site)

    code, doc = cli("apply", "--repo", site, "--backbone", "repvit_m1", "--arch", "yolov5", "--dry-run")
    assert code == 0 and tree_digest(site) == original
    assert "+from yolov5.models.repvit import RepViTM1, repvit_m1" in doc["diff"]
    assert "+++ b/yolov5/models/yolov5n-repvit_m1.yaml" in doc["diff"]
    assert sorted(doc["changed"]) == sorted([
        "yolov5/models/repvit.py", "yolov5/models/yolo.py", "yolov5/utils/torch_utils.py",
        "yolov5/models/yolov5n-repvit_m1.yaml",
    ])

    code, doc = cli("apply", "--repo", site, "--backbone", "repvit_m1", "--arch", "yolov5", "--style", "blocks")
    assert code == 2 and "--style blocks" in doc["error"] and tree_digest(site) == original
    code, doc = cli("apply", "--repo", site, "--backbone", "repvit_m1", "--arch", "yolov8")
    assert code == 2 and "builds: yolov5" in doc["error"]

    # a yaml of the same name with other content is never overwritten, and nothing else is written either
    mine = site / "yolov5" / "models" / "yolov5s-repvit_m1.yaml"
    mine.write_text("# my own\n")
    code, doc = cli("apply", "--repo", site, "--backbone", "repvit_m1", "--arch", "yolov5", "--scale", "s", "--no-verify")
    assert code == 2 and "yolov5s-repvit_m1.yaml" in doc["error"] and doc["step"] == "model_yaml"
    mine.unlink()
    assert tree_digest(site) == original

    code, _ = cli("apply", "--repo", site, "--backbone", "repvit_m1", "--arch", "yolov5", "--no-verify")
    assert code == 0
    yolo = site / "yolov5" / "models" / "yolo.py"
    yolo.write_text(yolo.read_text() + "# my edit\n")
    code, doc = cli("revert", "--repo", site)
    assert code == 2 and "yolov5/models/yolo.py" in doc["error"]
    code, doc = cli("revert", "--repo", site, "--force")
    assert code == 0 and doc["saved"]
    saved = Path(doc["saved"])
    assert (saved / "yolov5" / "models" / "yolo.py").read_text().endswith("# my edit\n")
    shutil.rmtree(site / ".mbpatch")  # the saved copy is the user's to delete
    assert tree_digest(site) == original
