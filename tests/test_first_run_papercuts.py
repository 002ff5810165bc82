"""Issue 16's first-run papercuts, on Ultralytics 8.4.190 as a user meets them.

- A checkout under a folder whose name has a digit then n/s/l/m/x (`exp2s/`, `tmp.AB5lX`): Ultralytics'
  `yaml_model_load` strips the scale over the WHOLE path, so the yaml mbpatch prints and hands the trainer and the
  exporter must survive it. The printed snippet's load lines run as printed; `verify --train --export onnx` pass.
- `list --arch` takes every arch apply takes (yolo12, yolo26).
- After the checkout's own `model.fuse()`, folded backbone convs are frozen like Ultralytics' own fused convs.
- `--nc` defaults to the stock yaml's nc (classify: 1000).
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

from conftest import run_cli, tree_digest, unpacked

pytest.importorskip("torch")


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["YOLO_CONFIG_DIR"] = str(tmp / "yolo-config")
    env["YOLO_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def exp2s(tmp_path_factory):
    """8.4.190 under `<tmp>/exp2s/`, patched with mobilenetv4_small + yolov8 (apply verifies and prints the snippet)."""
    root = tmp_path_factory.mktemp("papercuts") / "exp2s" / "ultralytics-8.4.190"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    proc = run_cli("apply", "--repo", root, "--backbone", "mobilenetv4_small", "--arch", "yolov8", "--json",
                   env={"YOLO_CONFIG_DIR": str(root.parent / "yolo-config")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, json.loads(proc.stdout)


# Runs the snippet's import and load lines exactly as printed, from a folder outside the checkout, with the
# checkout importable (as `pip install -e` makes it); prints the built model's backbone class.
LOAD_AS_PRINTED = r"""
import sys
snippet = sys.argv[1]
code = "\n".join(ln for ln in snippet.splitlines() if not ln.startswith("#") and ".train(" not in ln)
ns = {}
exec(code, ns)
print("BACKBONE", type(ns["model"].model.model[0]).__name__)
"""


@pytest.mark.slow
def test_snippet_under_a_folder_the_scale_regex_matches_runs_as_printed(exp2s, tmp_path):
    root, doc = exp2s
    snippet = doc["training_snippet"]
    load = doc["model_yaml_to_load"]
    assert re.search(r"(\d+)([nslmx])(.+)?$", str(root)), "the folder must be one the regex matches"
    # what the path must survive: the regex over the whole path keeps the name, and the file is found by it
    assert re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", load) == "yolov8-mobilenetv4_small.yaml", load
    assert (root / "ultralytics/cfg/models/v8/yolov8-mobilenetv4_small.yaml").is_file()
    assert f'YOLO("{load}")' in snippet
    env = _env(tmp_path)
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-c", LOAD_AS_PRINTED, snippet], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BACKBONE MobileNetV4ConvSmall" in proc.stdout
    # the absolute scaled path is what failed before: the regex cuts the folder's `s`, not the name's `n`
    absolute = snippet.replace(f'"{load}"', f'"{root}/ultralytics/cfg/models/v8/yolov8n-mobilenetv4_small.yaml"')
    old = subprocess.run([sys.executable, "-c", LOAD_AS_PRINTED, absolute], capture_output=True, text=True,
                         cwd=str(tmp_path), env=env)
    assert old.returncode != 0 and "FileNotFoundError" in old.stderr, old.stdout[-500:] + old.stderr[-1500:]


@pytest.mark.slow
def test_verify_train_and_export_under_exp2s_with_work_in_tmp_dot_folder(exp2s, tmp_path):
    root, _ = exp2s
    before = tree_digest(root)
    work = tmp_path / "tmp.AB5lX"  # a mkdtemp-like name the regex matches (`5lX`)
    proc = run_cli("verify", "--repo", root, "--train", "--export", "onnx", "--json", "--work", work,
                   env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    tr, ex = doc["train"], doc["export"]
    assert tr["ok"] and tr["loss_finite"] and tr["metrics_computed"] and tr["reload_ok"], tr
    assert ex["ok"] and ex["export"]["equal"], ex
    assert Path(tr["train"]["best"]).is_file() and work in Path(tr["train"]["best"]).parents
    assert tr["model"] == ex["model"] == "yolov8n-mobilenetv4_small.yaml"  # what the trainer and exporter loaded
    assert tree_digest(root) == before


@pytest.mark.slow
def test_checkout_inside_a_tmp_dot_folder_apply_snippet_and_export(tmp_path):
    root = tmp_path / "tmp.AB5lX" / "ultralytics"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}
    run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolo26", "--no-verify", env=env, check=0)
    proc = run_cli("verify", "--repo", root, "--export", "onnx", "--json", "--work", tmp_path / "work", env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["export"]["ok"] and doc["model_yaml_to_load"] == "yolo26n-repvit_m1.yaml", doc.get("export")
    full = _env(tmp_path)
    full["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", LOAD_AS_PRINTED, doc["training_snippet"]], capture_output=True,
                         text=True, cwd=str(tmp_path), env=full)
    assert out.returncode == 0 and "BACKBONE RepViTM1" in out.stdout, out.stderr[-3000:]


def test_a_path_is_kept_when_no_folder_can_match(tmp_path):
    from mbpatch.load_path import loadable, survives_scale_regex

    pkg = Path("/home/user/ultralytics/ultralytics")
    yaml = pkg / "cfg/models/v8/yolov8n-repvit_m1.yaml"
    assert survives_scale_regex(yaml) and loadable(yaml, pkg) == str(yaml)
    pkg = Path("/data/2024nov/ultralytics/ultralytics")
    yaml = pkg / "cfg/models/v8/yolov8n-repvit_m1.yaml"
    assert not survives_scale_regex(yaml) and loadable(yaml, pkg) == "yolov8n-repvit_m1.yaml"


@pytest.mark.slow
def test_list_arch_takes_yolo12_and_yolo26(tmp_path, monkeypatch):
    """The CLI accepts both; yolo26's stock rows (what apply's "lighter scales" line compares with) are measured;
    yolo12's stock yaml is one the same code measures (every backbone row reads the previous one)."""
    import yaml

    from mbpatch import sizes
    from mbpatch.sizes_child import STOCK

    monkeypatch.setenv("MBPATCH_CACHE", str(tmp_path))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    for arch in ("yolo12", "yolo26"):
        proc = run_cli("list", "--arch", arch, "--python", tmp_path / "no-python", env={"MBPATCH_CACHE": str(tmp_path)})
        assert "Invalid value" not in proc.stderr and f"stock {arch} backbone" in proc.stderr, proc.stderr[-1500:]
    models = unpacked("ultralytics", "8.4.190", "ultralytics") / "ultralytics/cfg/models"
    assert all(row[0] == -1 for row in yaml.safe_load((models / STOCK["yolo12"]).read_text())["backbone"])
    got = sizes.sizes("yolo26", ["mobilenetv2_050"])
    assert "26/yolo26.yaml" in got["stock"]["source"] and set(got["stock"]["scales"]) == set("nsmlx"), got["stock"]
    # the catalogue's lightest backbone has fewer parameters than the stock x backbone
    assert got["backbones"]["mobilenetv2_050"]["params"] < got["stock"]["scales"]["x"]["params"]
    assert sizes.lighter_scales("yolo26", "mobilenetv2_050") is not None


# The checkout's own fuse, after what strip_optimizer does to best.pt (every parameter frozen) and on a fresh build.
FUSE_FROZEN = r"""
import sys, json, yaml, torch
root, cfgs = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root)
from ultralytics.nn.tasks import DetectionModel
out = {}
for cfg in cfgs:
    d = yaml.safe_load(open(cfg)); d["scale"] = "n"
    m = DetectionModel(d, nc=80, verbose=False).eval()
    for p in m.parameters():
        p.requires_grad = False  # as strip_optimizer leaves best.pt
    m.fuse()
    stripped = sum(p.numel() for p in m.parameters() if p.requires_grad)
    m = DetectionModel(d, nc=80, verbose=False).eval()
    m.fuse()
    convs = [c for c in m.model[0].modules() if isinstance(c, torch.nn.Conv2d)]
    out[cfg] = {"stripped_then_fused_trainable": stripped, "backbone_convs": len(convs),
                "backbone_convs_trainable": sum(c.weight.requires_grad for c in convs),
                "stock_fused_conv_trainable": any(getattr(c, "conv", None) is not None and c.conv.weight.requires_grad
                                                  for c in m.model[1:].modules() if type(c).__name__ == "Conv")}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_fused_backbone_is_frozen_like_ultralytics_own(exp2s, tmp_path):
    root, _ = exp2s
    run_cli("apply", "--repo", root, "--backbone", "repvit_m1", "--arch", "yolov8", "--no-verify", check=0,
            env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")})
    cfgs = [str(root / f"ultralytics/cfg/models/v8/yolov8-{b}.yaml") for b in ("repvit_m1", "mobilenetv4_small")]
    proc = subprocess.run([sys.executable, "-c", FUSE_FROZEN, str(root), *cfgs], capture_output=True, text=True,
                          cwd=str(root), env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for cfg, r in got.items():
        assert r["stripped_then_fused_trainable"] == 0, (cfg, r)  # a fused best.pt: 0 "gradients", as stock
        assert r["stock_fused_conv_trainable"] is False, (cfg, r)
    # mobilenetv4_small is all conv + BN: every backbone conv is a folded one
    mnv4 = got[cfgs[1]]
    assert mnv4["backbone_convs"] > 0 and mnv4["backbone_convs_trainable"] == 0, mnv4
    # RepViT keeps its squeeze-excite convs unfolded (trainable, as any unfused layer); the rest are frozen
    rv = got[cfgs[0]]
    assert 0 < rv["backbone_convs_trainable"] < rv["backbone_convs"] // 2, rv


def test_nc_defaults_to_the_stock_yaml_s(tmp_path):
    root = tmp_path / "ultralytics"
    shutil.copytree(unpacked("ultralytics", "8.4.190", "ultralytics"), root)
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolo11", "--task", "classify",
            "--no-verify", env=env, check=0)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolo11", "--no-verify", env=env, check=0)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2", "--arch", "yolo26", "--task", "semantic", "--no-verify",
            env=env, check=0)
    models = root / "ultralytics/cfg/models"
    for ours, stock in (("11/yolo11-cls-mobilenetv2.yaml", "11/yolo11-cls.yaml"), ("11/yolo11-mobilenetv2.yaml", "11/yolo11.yaml"),
                        ("26/yolo26-sem-mobilenetv2.yaml", "26/yolo26-sem.yaml")):
        nc = [re.search(r"^nc:\s*(\d+)", (models / f).read_text(), re.M).group(1) for f in (ours, stock)]
        assert nc[0] == nc[1], (ours, nc)
    assert re.search(r"^nc: 1000", (models / "11/yolo11-cls-mobilenetv2.yaml").read_text(), re.M)
    run_cli("apply", "--repo", root, "--backbone", "mobilenetv2_050", "--arch", "yolo11", "--task", "classify", "--nc",
            "7", "--no-verify", env=env, check=0)
    assert re.search(r"^nc: 7\b", (models / "11/yolo11-cls-mobilenetv2_050.yaml").read_text(), re.M)
