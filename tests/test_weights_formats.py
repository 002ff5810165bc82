"""`apply --weights FILE` for the checkpoint formats users download: `.safetensors`, `{"model": ...}` /
`{"state_dict": ...}` wrappers, and the official RepViT release (THU-MIG/RepViT: `features.<i>` names inside
`{"model": ...}`); a pickle that would run code is still refused before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli, tree_digest
from test_weights import MAPS

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

# The official repvit_m1 configuration, one row per entry of `features` after the stem: (channels, SE, stride),
# as the release's model/repvit.py lists it (k=3, t=2 everywhere).
OFFICIAL_M1 = ([(48, 1, 1), (48, 0, 1), (48, 0, 1), (96, 0, 2), (96, 1, 1), (96, 0, 1), (96, 0, 1), (192, 0, 2)]
               + [(192, 1 - i % 2, 1) for i in range(14)] + [(192, 0, 1), (384, 0, 2), (384, 1, 1), (384, 0, 1)])


def official_repvit_m1_state(timm_state):
    """timm's repvit_m1 tensors under the official release's names, laid out from OFFICIAL_M1's rows: a stride-2
    row is a stage's downsample, the row before it that stage's pre_block, the others the stage's blocks."""
    out = {f"features.0.{'0' if k.startswith('stem.conv1.') else '2'}.{k.split('.', 2)[2]}": v
           for k, v in timm_state.items() if k.startswith("stem.")}
    stage, block = 0, 0
    for row, (channels, se, stride) in enumerate(OFFICIAL_M1, start=1):
        next_is_down = row < len(OFFICIAL_M1) and OFFICIAL_M1[row][2] == 2
        if stride == 2:
            stage, block = stage + 1, 0
            prefix, parts = f"stages.{stage}.downsample.", {"spatial_downsample.": "token_mixer.0.",
                                                            "channel_downsample.": "token_mixer.2.",
                                                            "ffn.conv1.": "channel_mixer.m.0.", "ffn.conv2.": "channel_mixer.m.2."}
        else:
            prefix = f"stages.{stage + 1}.downsample.pre_block." if next_is_down else f"stages.{stage}.blocks.{block}."
            block += 0 if next_is_down else 1
            parts = {"token_mixer.": "token_mixer.0.", "se.": "token_mixer.1.", "channel_mixer.conv1.": "channel_mixer.m.0.",
                     "channel_mixer.conv2.": "channel_mixer.m.2."}
        mine = {k[len(prefix):]: v for k, v in timm_state.items()
                if k.startswith(prefix) and not (stride == 2 and k[len(prefix):].startswith("pre_block."))}
        assert mine, (row, prefix)
        # the official table's SE flag is where timm's block has squeeze-excite: the rows line up
        assert any(k.startswith("se.") for k in mine) == bool(se), (row, prefix, se)
        for rest, v in mine.items():
            old = next(o for o in parts if rest.startswith(o))
            out[f"features.{row}.{parts[old]}{rest[len(old):]}"] = v
    out["classifier.classifier.l.weight"] = torch.zeros(1000, 384)
    return out


@pytest.fixture(scope="module")
def repvit_ref(tmp_path_factory):
    from test_backbones import Reference

    return Reference("repvit_m1", tmp_path_factory.mktemp("repvit_ref"))


def _maps(root, cfgs, x, tmp_path):
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "yolo-config")
    proc = subprocess.run([sys.executable, "-c", MAPS, str(root), "ultralytics", str(tmp_path / "maps.pt"),
                           str(tmp_path / "x.pt"), *cfgs], capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "maps.pt")


@pytest.mark.slow
def test_official_repvit_release_checkpoint_and_safetensors_through_apply(repvit_ref, ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}
    official = official_repvit_m1_state(repvit_ref.state)
    trunk = [k for k in repvit_ref.state if not k.startswith("head.")]  # timm's classifier is head.*
    assert len([k for k in official if k.startswith("features.")]) == len(trunk)
    torch.save({"model": official}, tmp_path / "repvit_m1_distill_300e.pth")  # the release's container
    run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov8", "--weights",
            tmp_path / "repvit_m1_distill_300e.pth", "--no-verify", env=env, check=0)
    st = tmp_path / "mnv4.safetensors"
    from test_backbones import Reference

    mnv4 = Reference("mobilenetv4_small", tmp_path)
    safetensors_torch.save_file({k: v.contiguous() for k, v in mnv4.state.items()}, str(st))
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--weights", st, "--no-verify",
            env=env, check=0)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    cfgs = {b: f"ultralytics/cfg/models/v8/yolov8-{b}.yaml" for b in ("repvit_m1", "mobilenetv4_small")}
    maps = _maps(root, list(cfgs.values()), x, tmp_path)
    for bid, ref in (("repvit_m1", repvit_ref), ("mobilenetv4_small", mnv4)):
        for k, (a, b) in enumerate(zip(maps[cfgs[bid]], ref.maps(x))):
            err = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
            assert err <= 1e-5, (bid, k, err)


def test_official_names_with_a_wrong_variant_are_refused_naming_keys(repvit_ref, ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    official = official_repvit_m1_state(repvit_ref.state)
    torch.save({"state_dict": official}, tmp_path / "m1.pth")  # an m1 file for m2: shapes differ
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m2", "--arch", "yolov8", "--weights", tmp_path / "m1.pth",
                   env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}, check=2)
    assert "[weights]" in proc.stderr and "stem.conv1.c.weight" in proc.stderr and "Traceback" not in proc.stderr
    assert tree_digest(root) == before


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_code_running_pickle_is_refused(ultralytics_checkout, tmp_path):
    root = ultralytics_checkout("8.4.190")
    before = tree_digest(root)
    torch.save({"model": {"stem.conv1.c.weight": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.pth")
    proc = run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov8", "--weights",
                   tmp_path / "evil.pth", env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}, check=2)
    assert "[weights]" in proc.stderr and "not a readable torch checkpoint" in proc.stderr
    assert tree_digest(root) == before
