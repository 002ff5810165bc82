"""apply -> build -> forward -> re-apply -> revert on real Ultralytics releases, through the CLI as a user runs it.

Releases are spread across the structural breakpoints of ../shared/ref/ultralytics-versions.md: 8.0.50
(yaml with depth/width multiples, old package layout), 8.0.120 (first RT-DETR era, before the 8.0.150
restructure), 8.0.200 (after it), 8.1.20, 8.2.103, 8.3.100 (frozenset dispatch, torch.nn spelling) and the
newest 8.4.x in the cache.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli, tree_digest

VERSIONS = ["8.0.50", "8.0.120", "8.0.200", "8.1.20", "8.2.103", "8.3.100", "8.4.190"]
RTDETR_FIRST = (8, 0, 111)


def vt(v):
    return tuple(int(x) for x in v.split("."))


def template_module(family: str, cls: str):
    """The backbone built straight from our template file, outside any checkout."""
    spec = importlib.util.spec_from_file_location(f"_tpl_{family}", REPO / "templates" / f"{family}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, cls)()


def template_params(family: str, cls: str) -> int:
    return sum(p.numel() for p in template_module(family, cls).parameters())


def first_shape(shapes):
    """The first tensor shape in a nested list of shapes (what the detector returns first in eval mode)."""
    if shapes and all(isinstance(s, int) for s in shapes):
        return shapes
    for s in shapes:
        if isinstance(s, list):
            found = first_shape(s)
            if found:
                return found
    return None


def all_shapes(shapes):
    if shapes and all(isinstance(s, int) for s in shapes):
        return [shapes]
    return [x for s in shapes if isinstance(s, list) for x in all_shapes(s)]


def apply_json(repo, *args, check=0):
    proc = run_cli("apply", "--repo", repo, *args, "--json", check=check)
    return json.loads(proc.stdout)


CASES = [(v, a) for v in VERSIONS for a in ("yolov8", "rtdetr") if a == "yolov8" or vt(v) >= RTDETR_FIRST]


@pytest.mark.slow
@pytest.mark.parametrize("version,arch", CASES)
def test_apply_build_forward_revert(ultralytics_checkout, version, arch):
    repo = ultralytics_checkout(version)
    before = tree_digest(repo)
    backbone, family, cls = (
        ("mobilenetv2", "mobilenetv2", "MobileNetV2") if VERSIONS.index(version) % 2 == 0
        else ("mobilenetv4_small", "mobilenetv4", "MobileNetV4ConvSmall")
    )
    nc = 3
    doc = apply_json(repo, "--backbone", backbone, "--arch", arch, "--nc", nc)
    v = doc["verification"]
    assert v["ok"], v
    patched = v["patched"]
    # built by the checkout's own code, not by the ultralytics installed in this environment
    assert Path(v["package_file"]) == repo / "ultralytics"

    # the backbone is layer 0, stored at index 4, with exactly our template's parameters
    rows = patched["summary"]
    assert rows[0]["i"] == 4 and rows[0]["params"] == template_params(family, cls)
    assert [r["i"] for r in rows] == list(range(4, 4 + len(rows)))

    # forward passes: square and non-square, the detector's outputs have the expected shapes
    out_sq, out_rect = first_shape(patched["forward"]["640x640"]), first_shape(patched["forward"]["640x480"])
    if arch == "rtdetr":  # the decoder's output format changed across releases: same as the stock model's,
        # with 300 queries of 4 box coordinates and nc class scores, whatever the input size
        assert patched["forward"] == v["stock"]["forward"]
        for size in ("640x640", "640x480"):  # the batch-1 eval passes (the train-mode pass is batch 2)
            flat = all_shapes(patched["forward"][size])
            assert [1, 300, 4] in flat and [1, 300, nc] in flat, flat
    else:  # one prediction per cell of the stride 8, 16 and 32 grids
        assert out_sq == [1, 4 + nc, 80 * 80 + 40 * 40 + 20 * 20]
        assert out_rect == [1, 4 + nc, 80 * 60 + 40 * 30 + 20 * 15]
    assert patched["params"] != v["stock"]["params"]

    # a second identical apply changes zero bytes
    after = tree_digest(repo)
    again = apply_json(repo, "--backbone", backbone, "--arch", arch, "--nc", nc, "--no-verify")
    assert again["changed"] == []
    assert all(s["status"] in ("already applied", "not needed") for s in again["steps"]), again["steps"]
    assert tree_digest(repo) == after

    # revert gives back the exact bytes, and nothing else is left behind
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before


@pytest.mark.parametrize("version", ["8.0.50", "8.0.6"])
def test_rtdetr_refused_before_8_0_111(ultralytics_checkout, version):
    repo = ultralytics_checkout(version)
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "rtdetr", check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "8.0.111" in lines[0] and "[arch]" in lines[0], proc.stderr
    assert tree_digest(repo) == before


@pytest.mark.slow
def test_rtdetr_mobilenetv2_reproduces_tutorial_table(ultralytics_checkout):
    """RT-DETR-l + MobileNetV2, nc=1, on 8.2.103: 594 layers, 20,263,651 parameters, 65.3 GFLOPs with thop 0.1.x,
    67.2 with ultralytics-thop 2.2.x, against the stock rtdetr-l's 32.8M parameters."""
    repo = ultralytics_checkout("8.2.103")
    proc = run_cli("apply", "--repo", repo, "--backbone", "MobileNetV2", "--arch", "rtdetr", "--nc", 1, check=0)
    out = proc.stdout
    assert "20,263,651" in out and "32,808,131" in out  # both rows of the comparison are shown
    doc = json.loads(run_cli("verify", "--repo", repo, "--json", check=0).stdout)["verification"]
    patched, stock = doc["patched"], doc["stock"]
    # Ultralytics counts nn.Module objects (`len(list(model.modules()))`): the tutorial's MobileNetV2 class was
    # a 224-module tree; ours is timm's tree for the same layers (BatchNormAct with drop/act children, stage
    # Sequentials), so the same network counts the difference more.
    ours = len(list(template_module("mobilenetv2", "MobileNetV2").modules()))
    assert patched["layers"] == 594 + (ours - 224)
    assert patched["params"] == 20_263_651
    assert round(stock["params"] / 1e6, 1) == 32.8
    thop_version = patched["thop"]
    expected = 67.2 if thop_version.startswith("2.2") else 65.3
    assert round(patched["gflops"], 1) == expected, (thop_version, patched["gflops"])
    assert stock["gflops"] > 100


@pytest.mark.slow
def test_tutorial_yaml_files_build_unedited(ultralytics_checkout):
    """Yaml files users already wrote for the tutorials' module names build after apply, with no edit:
    on 8.2.103 the light RT-DETR neck (RepC3 e=0.5) also needs the repc3 step."""
    fixtures = REPO / "tests" / "fixtures"
    repo = ultralytics_checkout("8.2.103")
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "rtdetr", "--no-verify", check=0)
    doc = json.loads(run_cli("verify", "--repo", repo, "--model", fixtures / "rtdetr-mobilenetv4-tutorial.yaml",
                             "--json", check=0).stdout)["verification"]
    assert [1, 300, 84] in all_shapes(doc["patched"]["forward"]["640x480"])
    assert len([r for r in doc["patched"]["summary"] if r["module"].endswith("RepC3")]) == 4
    # the same checkout, a YOLOv8 yaml naming the backbone by its lower-case tutorial alias
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--no-verify", check=0)
    doc = json.loads(run_cli("verify", "--repo", repo, "--model", fixtures / "yolov8-mobilenetv4-tutorial.yaml",
                             "--json", check=0).stdout)["verification"]
    assert first_shape(doc["patched"]["forward"]["640x640"]) == [1, 84, 8400]


@pytest.mark.slow
def test_stacked_applies_revert_in_one_go(ultralytics_checkout):
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    doc = apply_json(repo, "--backbone", "mobilenetv4_small", "--arch", "yolo11", "--scale", "s")
    assert doc["verification"]["ok"]
    journal = json.loads((repo / ".mbpatch" / "journal.json").read_text())
    assert [e["backbone"] for e in journal["entries"]] == ["mobilenetv2", "mobilenetv4_small"]
    # the first apply's model still builds next to the second one's
    first = repo / "ultralytics/cfg/models/v8/yolov8-mobilenetv2.yaml"
    assert json.loads(run_cli("verify", "--repo", repo, "--model", first, "--json", check=0).stdout)["ok"]
    run_cli("revert", "--repo", repo, check=0)
    assert tree_digest(repo) == before


def test_dry_run_prints_a_diff_and_writes_nothing(ultralytics_checkout):
    repo = ultralytics_checkout("8.3.100")
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "rtdetr", "--dry-run", check=0)
    assert "+from ultralytics.nn.AddModules import MobileNetV4ConvSmall" in proc.stdout
    assert "MobileNetV4ConvSmall, []]" in proc.stdout
    assert tree_digest(repo) == before


@pytest.mark.parametrize(
    "args,step",
    [
        (["--backbone", "resnet50", "--arch", "yolov8"], "[backbone]"),
        (["--backbone", "mobilenetv2", "--arch", "yolov5"], "[arch]"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(ultralytics_checkout, args, step):
    repo = ultralytics_checkout("8.4.190")
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, *args, check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and step in lines[0], proc.stderr
    assert tree_digest(repo) == before


def test_unknown_arch_and_not_a_checkout(tmp_path):
    proc = run_cli("apply", "--repo", tmp_path, "--backbone", "mobilenetv2", "--arch", "yolov9", check=2)
    assert "yolov9" in proc.stderr
    (tmp_path / "README.md").write_text("not a checkout\n")
    proc = run_cli("apply", "--repo", tmp_path, "--backbone", "mobilenetv2", "--arch", "yolov8", check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "[detect]" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_recipe_that_cannot_place_its_change_refuses(ultralytics_checkout):
    """A hand-restructured forward loop: the predict_once step names tasks.py and writes nothing."""
    repo = ultralytics_checkout("8.2.103")
    tasks = repo / "ultralytics/nn/tasks.py"
    text = tasks.read_text()
    text = text.replace("            x = m(x)  # run\n            y.append(x if m.i in self.save else None)  # save output\n",
                        "            x, y = self._my_step(m, x, y)\n", 1)
    tasks.write_text(text)
    before = tree_digest(repo)
    proc = run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8", check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ultralytics/nn/tasks.py" in lines[0] and "[predict_once]" in lines[0], proc.stderr
    assert tree_digest(repo) == before


@pytest.mark.slow
def test_python_option_picks_the_interpreter(ultralytics_checkout, tmp_path):
    repo = ultralytics_checkout("8.4.190")
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify", check=0)
    doc = json.loads(run_cli("verify", "--repo", repo, "--python", sys.executable, "--json", check=0).stdout)
    assert doc["verification"]["python"] == ".".join(map(str, sys.version_info[:3]))
    proc = run_cli("verify", "--repo", repo, "--python", tmp_path / "no-such-python", check=2)
    assert "no-such-python" in proc.stderr and "[verify]" in proc.stderr
