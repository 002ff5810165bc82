"""Each recipe on the real source files of many releases, in memory (no model is built here).

What a user would check: the recipe places its change in every release, says "already applied" the second
time and when the tutorial's edit was made by hand, and leaves every other line of the file as it was.
"""

from __future__ import annotations

import collections
import difflib
import json

import pytest

from conftest import run_cli, tree_digest, unpacked
from mbpatch.checkout import detect
from mbpatch.recipes import ALREADY, APPLIED, NOT_NEEDED, Context
from mbpatch.recipes.ultralytics import RECIPES
from mbpatch.templates import lookup

VERSIONS = ["8.0.0", "8.0.6", "8.0.50", "8.0.120", "8.0.200", "8.1.20", "8.2.103", "8.3.40", "8.3.100", "8.3.253", "8.4.190"]
BY_NAME = {r.name: r for r in RECIPES}


def vt(v):
    return tuple(int(x) for x in v.split("."))


def context(version, arch="rtdetr", **kw):
    co = detect(str(unpacked("ultralytics", version, "ultralytics")))
    return Context(co, lookup("mobilenetv4_small"), arch, **kw)


def sources_for(recipe, ctx, texts=None):
    texts = dict(texts or {})
    for rel in recipe.targets(ctx):
        if rel not in texts:
            texts[rel] = ctx.checkout.read(rel)
    return texts


def stripped_lines(text):
    """Lines without indentation; `elif` counted as `if` (the stock dispatch chain becomes our branch's elif)."""
    lines = (ln.strip() for ln in text.splitlines() if ln.strip())
    return collections.Counter(ln[2:] if ln.startswith("elif ") else ln for ln in lines)


@pytest.mark.parametrize("version", VERSIONS)
def test_detect_reads_version_and_files(version):
    co = detect(str(unpacked("ultralytics", version, "ultralytics")))
    assert co.kind == "ultralytics" and co.version == version
    for role in ("tasks", "torch_utils", "detect_train", "cfg_models"):
        assert co.files[role] and (co.root / co.files[role]).exists(), role
    assert (co.files["block"] is not None) == (vt(version) >= (8, 0, 98))  # nn/modules/ package from 8.0.98
    # the package folder itself is accepted too
    assert detect(str(co.package)).root == co.root


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["register", "channel_index", "predict_once", "rtdetr_predict"])
def test_tasks_recipes_only_add_lines(version, name):
    """The tasks.py steps keep every original line (some re-indented into a new else:), and are idempotent."""
    arch = "rtdetr" if vt(version) >= (8, 0, 111) else "yolov8"
    ctx = context(version, arch)
    recipe = BY_NAME[name]
    texts = sources_for(recipe, ctx)
    out = recipe.run(ctx, texts)
    if name == "rtdetr_predict" and arch != "rtdetr":
        assert out.status == NOT_NEEDED
        return
    assert out.status == APPLIED, out
    (rel, new), = out.changes.items()
    old = texts[rel]
    missing = stripped_lines(old) - stripped_lines(new)
    assert not missing, f"lines lost or altered: {list(missing)[:5]}"
    compile(new, rel, "exec")
    again = recipe.run(ctx, {**texts, rel: new})
    assert again.status == ALREADY and not again.changes


@pytest.mark.parametrize("version", VERSIONS)
def test_repc3_fixes_only_the_two_convs(version):
    ctx = context(version)
    recipe = BY_NAME["repc3"]
    texts = sources_for(recipe, ctx)
    out = recipe.run(ctx, texts)
    if vt(version) < (8, 0, 98):
        assert out.status == NOT_NEEDED  # no RepC3 before the nn/modules/ package
    elif vt(version) >= (8, 3, 38):
        assert out.status == ALREADY  # fixed upstream in 8.3.38
    else:
        assert out.status == APPLIED
        (rel, new), = out.changes.items()
        diff = [d for d in difflib.ndiff(texts[rel].splitlines(), new.splitlines()) if d[:2] in ("- ", "+ ")]
        assert len(diff) == 4, diff
        removed, added = [d[2:] for d in diff if d[0] == "-"], [d[2:] for d in diff if d[0] == "+"]
        assert [r.replace("c1, c2, 1, 1", "c1, c_, 1, 1") for r in removed] == added
        assert recipe.run(ctx, {**texts, rel: new}).status == ALREADY
    # not needed for the other archs
    assert recipe.run(context(version, "yolov8"), texts).status == NOT_NEEDED


@pytest.mark.parametrize("version", VERSIONS)
def test_flops_stride(version):
    ctx = context(version, "yolov8")
    recipe = BY_NAME["flops_stride"]
    texts = sources_for(recipe, ctx)
    out = recipe.run(ctx, texts)
    if vt(version) >= (8, 0, 236):
        assert out.status == NOT_NEEDED  # get_flops falls back to (or always uses) the full image size
        return
    assert out.status == APPLIED
    (rel, new), = out.changes.items()
    diff = [d for d in difflib.ndiff(texts[rel].splitlines(), new.splitlines()) if d[:2] in ("- ", "+ ")]
    assert len(diff) == 2 and diff[1][2:].strip().startswith("stride = 640  #"), diff
    assert recipe.run(ctx, {**texts, rel: new}).status == ALREADY


@pytest.mark.parametrize("version", ["8.0.0", "8.0.50", "8.0.120", "8.2.103", "8.4.190"])
def test_rect_off_only_when_asked(version):
    recipe = BY_NAME["rect_off"]
    ctx = context(version, "yolov8")
    texts = sources_for(recipe, ctx)
    assert recipe.run(ctx, texts).status == NOT_NEEDED  # our backbones accept any size
    ctx = context(version, "yolov8", rect_off=True)
    out = recipe.run(ctx, texts)
    if version == "8.0.0":
        assert out.status == NOT_NEEDED  # 8.0.0 passes rect=self.args.rect only: validation is never rect
        return
    assert out.status == APPLIED
    (rel, new), = out.changes.items()
    assert "mode == 'val'" not in new and 'mode == "val"' not in new.split("def build_dataset")[-1].split("def ")[0]
    assert recipe.run(ctx, {**texts, rel: new}).status == ALREADY


# --- a checkout edited by hand, following the tutorials ------------------------------------------------------

FORWARD_STOCK = "            x = m(x)  # run\n            y.append(x if m.i in self.save else None)  # save output\n"
FORWARD_TUTORIAL = """\
            if hasattr(m, 'backbone'):
                x = m(x)
                if len(x) != 5:  # 0 - 5
                    x.insert(0, None)
                for index, i in enumerate(x):
                    if index in self.save:
                        y.append(i)
                    else:
                        y.append(None)
                x = x[-1]  # the last output goes on to the next layer
            else:
                x = m(x)  # run
                y.append(x if m.i in self.save else None)  # save output
"""
TAIL_STOCK = """\
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)  # module
        t = str(m)[8:-2].replace("__main__.", "")  # module type
        m.np = sum(x.numel() for x in m_.parameters())  # number params
        m_.i, m_.f, m_.type = i, f, t  # attach index, 'from' index, type
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>20}{n_:>3}{m.np:10.0f}  {t:<45}{str(args):<30}")  # print
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)  # append to savelist
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
"""
TAIL_TUTORIAL = """\
        if isinstance(c2, list):
            m_ = m
            m_.backbone = True
        else:
            m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)  # module
            t = str(m)[8:-2].replace('__main__.', '')  # module type
        m.np = sum(x.numel() for x in m_.parameters())  # number params
        m_.i, m_.f, m_.type = i + 4 if backbone else i, f, t  # attach index, 'from' index, type
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>20}{n_:>3}{m.np:10.0f}  {t:<45}{str(args):<30}")  # print
        save.extend(x % (i + 4 if backbone else i) for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        if isinstance(c2, list):
            ch.extend(c2)
            for _ in range(5 - len(ch)):
                ch.insert(0, 0)
        else:
            ch.append(c2)
"""


def tutorial_edit(text: str) -> str:
    """tasks.py of 8.2.103 as a user leaves it after following the MobileNetV4 RT-DETR tutorial by hand."""
    edits = [
        ("import torch.nn as nn\n", "import torch.nn as nn\nfrom ultralytics.nn.AddModules import *\n", 1),
        ("    layers, save, c2 = [], [], ch[-1]  # layers, savelist, ch out\n",
         "    layers, save, c2 = [], [], ch[-1]  # layers, savelist, ch out\n    backbone = False\n", 1),
        ('        m = getattr(torch.nn, m[3:]) if "nn." in m else globals()[m]  # get module\n',
         '        t = m\n        m = getattr(torch.nn, m[3:]) if "nn." in m else globals()[m]  # get module\n', 1),
        ("        if m in {\n            Classify,\n",
         "        if m in {MobileNetV4ConvSmall}:\n            m = m(*args)\n            c2 = m.width_list\n"
         "            backbone = True\n        elif m in {\n            Classify,\n", 1),
        (TAIL_STOCK, TAIL_TUTORIAL, 1),
        (FORWARD_STOCK, FORWARD_TUTORIAL, 2),
    ]
    for old, new, count in edits:
        assert text.count(old) == count, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_steps_done_by_hand_are_recognised(ultralytics_checkout):
    repo = ultralytics_checkout("8.2.103")
    tasks = repo / "ultralytics/nn/tasks.py"
    tasks.write_text(tutorial_edit(tasks.read_text()))
    hand_edited = tasks.read_bytes()
    doc = json.loads(run_cli("apply", "--repo", repo, "--backbone", "MobileNetV4ConvSmall", "--arch", "rtdetr",
                             "--head", "light", "--json", check=0).stdout)
    status = {s["recipe"]: s["status"] for s in doc["steps"]}
    for name in ("channel_index", "predict_once", "rtdetr_predict"):
        assert status[name] == ALREADY, (name, doc["steps"])
    # register adds only what the tutorial's set lacked (the aliases), nothing else
    assert status["register"] == APPLIED
    aliases = [n for n in lookup("mobilenetv4_small").names if n != "MobileNetV4ConvSmall"]
    assert [s["detail"] for s in doc["steps"] if s["recipe"] == "register"] == ["added names " + ", ".join(aliases)]
    assert doc["verification"]["ok"], doc["verification"]
    run_cli("revert", "--repo", repo, check=0)
    assert tasks.read_bytes() == hand_edited


@pytest.mark.slow
def test_hand_edited_checkout_builds_with_our_yaml(ultralytics_checkout):
    """The same hand edit, then a second apply changes nothing in tasks.py."""
    repo = ultralytics_checkout("8.2.103")
    tasks = repo / "ultralytics/nn/tasks.py"
    tasks.write_text(tutorial_edit(tasks.read_text()).replace(
        "{MobileNetV4ConvSmall}", "{MobileNetV4ConvSmall, mobilenetv4_small, mobilenetv4_conv_small}"))
    before = tasks.read_text()
    doc = json.loads(run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "rtdetr",
                             "--no-verify", "--json", check=0).stdout)
    status = {s["recipe"]: s["status"] for s in doc["steps"]}
    for step in ("register", "channel_index", "predict_once", "rtdetr_predict"):
        assert status[step] == "already applied", (step, status)
    # the tutorial's edit is kept as it is: the one change to tasks.py is the fuse step's added loop (not a
    # tutorial step), lines added and none removed
    added = [l for l in difflib.ndiff(before.splitlines(), tasks.read_text().splitlines()) if l[:2] in ("+ ", "- ")]
    assert added and all(l.startswith("+ ") for l in added), added
    assert any("reparameterize()" in l for l in added) and len(added) <= 3, added
    snapshot = tree_digest(repo)
    run_cli("apply", "--repo", repo, "--backbone", "mobilenetv4_small", "--arch", "rtdetr", "--no-verify", check=0)
    assert tree_digest(repo) == snapshot
