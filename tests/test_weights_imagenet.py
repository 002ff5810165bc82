"""`apply --weights imagenet`: timm's default ImageNet checkpoint, found through the real `huggingface_hub` code path.

Never a network request: each test lays out a Hugging Face cache itself (`models--timm--<tag>/refs/main` and
`snapshots/<rev>/model.safetensors`, the file written from timm's own randomly initialised model of that name)
and runs mbpatch with `HF_HUB_OFFLINE=1` and `HF_HOME` / `HF_HUB_CACHE` pointed at it. The backbone inside the
built detector must compute timm's `features_only` maps for that file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest
from conftest_yolov5 import make_git, yolov5_env  # noqa: F401 (yolov5_env is a fixture)
from test_weights import MAPS

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from mbpatch.templates import CATALOG  # noqa: E402

BACKBONES = ("mobilenetv4_small", "repvit_m1", "mobilenetv2_050")  # one per family
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_env(home) -> dict:
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "YOLO_CONFIG_DIR": str(home / "yolo-config")}


def hf_snapshot(home, repo: str, state: dict):
    """Lay out `repo` in the Hugging Face cache under `home` as huggingface_hub does (refs/main -> a snapshot
    holding model.safetensors with `state`); returns the file."""
    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    snap = folder / "snapshots" / REVISION
    snap.mkdir(parents=True)
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """HF_HOME with timm's repos of BACKBONES, each holding timm's random model as model.safetensors."""
    from test_backbones import Reference

    home = tmp_path_factory.mktemp("hf-home")
    refs = {}
    for bid in BACKBONES:
        ref = Reference(bid, tmp_path_factory.mktemp(bid))
        ref.file = hf_snapshot(home, CATALOG[bid].hf_hub_id, ref.state)
        refs[bid] = ref
    return home, refs


def _maps_inside_the_detector(root, kind, cfgs, x, tmp_path, env):
    torch.save(x, tmp_path / "x.pt")
    full = {**os.environ, **env}
    full.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", MAPS, str(root), kind, str(tmp_path / "maps.pt"), str(tmp_path / "x.pt"),
                           *cfgs], capture_output=True, text=True, cwd=root, env=full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "maps.pt")


def _same_as_timm(maps, refs, yaml_of, x):
    for bid, ref in refs.items():
        ours, theirs = maps[yaml_of(bid)], ref.maps(x)
        assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs], bid
        for k, (a, b) in enumerate(zip(ours, theirs)):
            err = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
            assert err <= 1e-5, (bid, f"stride {4 * 2 ** k}", err)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ultralytics", "yolov5"])
def test_imagenet_from_the_hugging_face_cache_gives_timm_s_maps(kind, hf_cache, ultralytics_checkout, tmp_path,
                                                                 yolov5_env):
    home, refs = hf_cache
    if kind == "yolov5":
        root, env, arch = make_git(tmp_path / "yolov5", "7.0.14"), {**yolov5_env, **hf_env(home)}, "yolov5"
        yaml_of = "models/yolov5n-{}.yaml".format
    else:
        root, env, arch = ultralytics_checkout("8.4.190"), hf_env(home), "yolov8"
        yaml_of = "ultralytics/cfg/models/v8/yolov8-{}.yaml".format
    for bid in BACKBONES:
        extra = ["--no-verify"]  # the file is checked before writing either way; the maps below are the proof
        proc = run_cli("apply", "--repo", root, "--backbone", bid, "--arch", arch, "--weights", "imagenet", "--json",
                       *extra, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        doc = json.loads(proc.stdout)
        w = doc["weights"]
        assert w["repo"] == CATALOG[bid].hf_hub_id and w["revision"] == REVISION, w
        assert w["sha256"] == hashlib.sha256(refs[bid].file.read_bytes()).hexdigest()
        assert os.path.samefile(w["file"], refs[bid].file)
    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    maps = _maps_inside_the_detector(root, kind, [yaml_of(b) for b in BACKBONES], x, tmp_path, env)
    _same_as_timm(maps, refs, yaml_of, x)


def test_imagenet_with_no_cache_and_offline_is_one_line_and_exit_2(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    env = hf_env(tmp_path / "empty-hf-home")
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolo26", "--weights", "imagenet", env=env,
                   check=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "[weights]" in lines[0] and "timm/repvit_m1.dist_in1k" in lines[0] and "nothing was changed" in lines[0]
    assert str(tmp_path / "empty-hf-home" / "hub") in lines[0]  # where it looked, where to put it
    assert tree_digest(root) == before


def test_imagenet_for_a_backbone_timm_has_no_weights_for(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv2_075", "--arch", "yolov8", "--weights", "imagenet",
                   env=hf_env(tmp_path), check=2)
    assert "no pretrained weights" in proc.stderr and "mobilenetv2_075" in proc.stderr
    assert tree_digest(root) == before


def test_catalogue_hub_ids_are_timm_s_default_pretrained_tags():
    """The catalogue's data equals what the installed timm says (refresh it when timm changes its defaults)."""
    from timm.models import get_pretrained_cfg

    for b in CATALOG.values():
        cfg = get_pretrained_cfg(b.reference)
        expected = cfg.hf_hub_id if cfg is not None and cfg.tag != "untrained" else None
        assert b.hf_hub_id == expected, (b.id, b.reference, expected)
