"""Benchmark: deployed (fused) latency of patched detectors and of the backbones, CPU, one thread.

In one run, at 1x3x640x640, batch 1, `torch.set_num_threads(1)`, eval mode, torch.no_grad:

1. Detectors: a fresh copy of a real Ultralytics checkout (default: the cached 8.4.190 sources the tests use,
   or `--repo`) patched by `mbpatch apply --no-verify` for each backbone (`--arch yolov8`); each patched
   detector of scale `--scale` is timed after the checkout's own `model.fuse()` (which the `fuse` recipe makes
   fold the backbone too) against the stock detector of the same scale after the same `fuse()`, and against
   itself not fused.
2. Backbones: each template after `reparameterize()` against timm's same network (`features_only`,
   pretrained=False; MobileNetV4's 1x1 conv to 960 replaced by an identity, as in `backbones.py`) after
   `timm.utils.reparameterize_model` and BN folding (every BatchNorm whose input is a conv's output is folded
   into it with `torch.nn.utils.fusion.fuse_conv_bn_eval`; timm's BatchNormAct2d keeps its activation), and
   against itself not folded. Both folded models are first checked to compute what they computed before.

The models compared in one row are timed alternately, run by run, so background load hits them alike; the
median of `--runs` timed runs after `--warmup` untimed ones is reported.

    python benchmarks/deploy.py [--runs 5] [--warmup 1] [--only ID ...] [--repo CHECKOUT] [--out FILE]

Prints two markdown tables (and writes them to --out with the date, machine and versions). Not a test.

With `--runtimes torch,onnx,openvino,ncnn,litert` it measures instead what `mbpatch bench` measures, for each
arch of `--archs`, image size of `--sizes` and thread count of `--threads` (`all` = every core): stock and
patched detectors of `--scales`, fused, exported by the checkout's own exporter, timed batch 1 on each runtime,
all models alternated in every round. One markdown table per (arch, size, threads); a runtime that is not
installed is named with its pip line.

    python benchmarks/deploy.py --runtimes torch,onnx,openvino,ncnn --archs yolov8 --scales n --sizes 320 \
        --threads 1 --only mobilenetv2_050 mobilenetv4_small --runs 10 [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from backbones import cpu_name, load_file  # noqa: E402  (same template loading as the backbone benchmark)

sys.path.insert(0, str(ROOT / "tests"))
from conftest import unpacked  # noqa: E402  (the same cached real sources the tests use)


def timed_alternately(fns, runs, warmup):
    """Median seconds of each function, the functions called in turn, run by run."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def tensors(o):
    if isinstance(o, torch.Tensor):
        return [o]
    if isinstance(o, dict):
        o = list(o.values())
    return [t for v in (o if isinstance(o, (list, tuple)) else []) for t in tensors(v)]


def worst_error(a, b):
    """Largest |a - b| over every output tensor, relative to max(1, |a|)."""
    return max(float((x - y).abs().max()) / max(1.0, float(x.abs().max())) for x, y in zip(tensors(a), tensors(b)))


# --- timm's side: reparameterize_model, then BN folding --------------------------------------------------------


def fold_timm_bn(model: nn.Module, x: torch.Tensor) -> int:
    """Fold every BatchNorm2d whose input is, as one tensor, the output of an nn.Conv2d; returns how many."""
    produced, pairs, hooks = {}, [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: produced.__setitem__(id(o), (name, o))))
        elif isinstance(m, nn.BatchNorm2d):
            def pre(mod, i, name=name):
                hit = produced.get(id(i[0]))
                if hit is not None and hit[1] is i[0]:  # the tensor object itself, not a recycled id
                    pairs.append((hit[0], name))
            hooks.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for conv_name, bn_name in dict.fromkeys(pairs):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        set_module(model, conv_name, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
        rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        set_module(model, bn_name, nn.Sequential(*rest) if rest else nn.Identity())
    return len(pairs)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def timm_deployed(timm, backbone, x):
    model = timm.create_model(backbone.reference, pretrained=False, features_only=True)
    if backbone.family == "mobilenetv4":
        model.blocks[4] = nn.Identity()  # the 1x1 conv to 960 channels, not part of our backbone
    model = model.eval()
    with torch.no_grad():
        before = model(x)
    model = timm.utils.reparameterize_model(model)
    folded = fold_timm_bn(model, x)
    with torch.no_grad():
        error = worst_error(before, model(x))
    return model, folded, error


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and layer scales, so the folding checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
    return model


# --- the detectors ---------------------------------------------------------------------------------------------


def patched_checkout(repo: Path, ids, python: str) -> None:
    for bid in ids:
        proc = subprocess.run([python, "-m", "mbpatch", "apply", "--repo", str(repo), "--backbone", bid,
                               "--arch", "yolov8", "--no-verify", "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"apply {bid} failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        steps = {s["recipe"]: s["status"] for s in json.loads(proc.stdout)["steps"]}
        if steps.get("fuse") not in ("applied", "already applied"):
            raise SystemExit(f"the fuse recipe did not apply: {steps}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed forward passes per model (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward passes first")
    parser.add_argument("--size", type=int, default=640, help="input height and width")
    parser.add_argument("--scale", default="n", help="detector scale (stock and patched alike)")
    parser.add_argument("--only", nargs="*", help="catalogue ids (default: all)")
    parser.add_argument("--repo", type=Path, help="an unpatched Ultralytics checkout to copy (default: cached 8.4.190)")
    parser.add_argument("--out", type=Path, help="also write the tables, with date/machine/versions, here")
    parser.add_argument("--runtimes", help="torch,onnx,openvino,ncnn,litert: time on these runtimes (mbpatch bench)")
    parser.add_argument("--archs", default="yolov8,yolo11,yolo26", help="with --runtimes: Ultralytics archs")
    parser.add_argument("--scales", default="n,s", help="with --runtimes: detector scales")
    parser.add_argument("--sizes", default="640,320", help="with --runtimes: input sizes")
    parser.add_argument("--threads", default="1,all", help="with --runtimes: thread counts (all = every core)")
    args = parser.parse_args(argv)
    if args.runtimes:
        return runtime_main(args)

    import timm
    import timm.utils

    torch.set_num_threads(1)
    catalogue = load_file(ROOT / "templates" / "__init__.py", "_mbpatch_deploy_catalogue")
    ids = args.only or list(catalogue.CATALOG)
    x = torch.rand(1, 3, args.size, args.size)
    small = torch.rand(1, 3, 128, 96)
    started = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="mbpatch-deploy-"))
    try:
        source = args.repo or unpacked("ultralytics", "8.4.190", "ultralytics")
        repo = work / "checkout"
        shutil.copytree(source, repo, ignore=shutil.ignore_patterns(".git", ".mbpatch", "__pycache__"))
        patched_checkout(repo, ids, sys.executable)
        sys.path.insert(0, str(repo))
        sys.dont_write_bytecode = True
        os.environ.setdefault("YOLO_OFFLINE", "1")
        import yaml

        ultralytics = importlib.import_module("ultralytics")
        assert Path(ultralytics.__file__).resolve().is_relative_to(repo.resolve()), ultralytics.__file__
        tasks = importlib.import_module("ultralytics.nn.tasks")

        def detector(path):
            d = yaml.safe_load(path.read_text())
            d["scale"] = args.scale
            return tasks.DetectionModel(d, nc=80, verbose=False).eval()

        v8 = repo / "ultralytics/cfg/models/v8"
        stock = detector(v8 / "yolov8.yaml").fuse(verbose=False)

        det_rows, bb_rows = [], []
        for bid in ids:
            b = catalogue.CATALOG[bid]
            # detector: fused stock, fused patched, patched not fused
            plain = randomize_(detector(v8 / f"yolov8-{bid}.yaml"))
            fused = copy.deepcopy(plain).fuse(verbose=False)
            with torch.no_grad():
                error = worst_error(plain(small), fused(small))
                norms = sum(isinstance(m, nn.BatchNorm2d) for m in fused.model[0].modules())
                t_stock, t_fused, t_plain = timed_alternately(
                    [lambda: stock(x), lambda: fused(x), lambda: plain(x)], args.runs, args.warmup)
            det_rows.append((bid, t_stock, t_fused, t_plain, error, norms))
            del plain, fused
            # backbone: ours folded, timm deployed, ours not folded
            cls = getattr(load_file(b.template, f"_mbpatch_deploy_{b.family}"), b.cls)
            ours = randomize_(cls()).eval()
            ours_fused = copy.deepcopy(ours).reparameterize()
            ref, folded, ref_error = timm_deployed(timm, b, small)
            with torch.no_grad():
                our_error = worst_error(ours(small), ours_fused(small))
                t_ours, t_ref, t_ours_plain = timed_alternately(
                    [lambda: ours_fused(x), lambda: ref(x), lambda: ours(x)], args.runs, args.warmup)
            bb_rows.append((bid, b.reference, t_ours, t_ref, t_ours_plain, our_error, ref_error, folded))
            del ours, ours_fused, ref
            print(f"{bid}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    lines = [
        f"### Detectors: yolov8{args.scale} stock vs patched, both after the checkout's own `model.fuse()`",
        "",
        f"| backbone | stock fused (ms) | patched fused (ms) | patched / stock | patched not fused (ms) "
        "| fusing speed-up | fused vs not: max rel. error | BN left in backbone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bid, t_stock, t_fused, t_plain, error, norms in det_rows:
        lines.append(f"| {bid} | {ms(t_stock)} | {ms(t_fused)} | {t_fused / t_stock:.2f} | {ms(t_plain)} "
                     f"| {t_plain / t_fused:.2f}x | {error:.1e} | {norms} |")
    lines += [
        "",
        "### Backbones: ours after `reparameterize()` vs timm after `reparameterize_model` + BN folding",
        "",
        "| backbone | timm reference | ours fused (ms) | timm deployed (ms) | ours / timm | ours not fused (ms) "
        "| fusing speed-up | max rel. error ours / timm | timm BNs folded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bid, ref, t_ours, t_ref, t_plain, our_error, ref_error, folded in bb_rows:
        lines.append(f"| {bid} | {ref} | {ms(t_ours)} | {ms(t_ref)} | {t_ours / t_ref:.2f} | {ms(t_plain)} "
                     f"| {t_plain / t_ours:.2f}x | {our_error:.1e} / {ref_error:.1e} | {folded} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        meta = "\n".join([
            f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
            f"{os.cpu_count()} cores, one torch thread; input 1x3x{args.size}x{args.size}, eval, no_grad; median of "
            f"{args.runs} runs after {args.warmup} warm-up, the models of a row timed alternately",
            f"- python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
            f"Ultralytics {getattr(ultralytics, '__version__', '?')} (patched copy, `--arch yolov8`)",
            f"- total benchmark time {time.perf_counter() - started:.0f} s",
        ])
        args.out.write_text("# Deploy benchmark: fused detectors and backbones\n\n" + meta + "\n\n" + table + "\n")


def runtime_main(args) -> None:
    """`mbpatch bench --json` for each arch x size x threads; markdown tables (and --out, newest first)."""
    catalogue = load_file(ROOT / "templates" / "__init__.py", "_mbpatch_deploy_catalogue")
    ids = args.only or sorted(catalogue.AVAILABLE)
    source = args.repo or unpacked("ultralytics", "8.4.190", "ultralytics")
    started = time.perf_counter()
    load_before = os.getloadavg()
    sections = []
    for arch in args.archs.split(","):
        for size in (int(v) for v in args.sizes.split(",")):
            for threads in args.threads.split(","):
                n = os.cpu_count() if threads == "all" else int(threads)
                cmd = [sys.executable, "-m", "mbpatch", "bench", "--repo", str(source), "--arch", arch, "--scale",
                       args.scales, "--backbone", ",".join(ids), "--runtime", args.runtimes, "--imgsz", str(size),
                       "--threads", str(n), "--runs", str(args.runs), "--json"]
                print(" ".join(cmd[2:]), file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                try:
                    doc = json.loads(proc.stdout)
                except ValueError:
                    doc = {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
                sections.append(runtime_table(arch, size, n, doc))
                print(sections[-1] + "\n", flush=True)
    load_after = os.getloadavg()
    meta = (f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, {os.cpu_count()} cores; "
            f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; total {time.perf_counter() - started:.0f} s\n"
            f"- command: `python benchmarks/deploy.py --runtimes {args.runtimes} --archs {args.archs} --scales "
            f"{args.scales} --sizes {args.sizes} --threads {args.threads} --only {' '.join(ids)} --runs {args.runs}`")
    text = meta + "\n\n" + "\n\n".join(sections)
    if args.out:
        args.out.write_text(text + "\n")


def runtime_table(arch, size, threads, doc) -> str:
    head = f"#### {arch}, imgsz {size}, {threads} thread(s): ms (patched / stock)"
    if not doc.get("rows"):
        return f"{head}\n\nfailed: {doc.get('error')}"
    rts = doc["runtimes"]
    lines = [head, "", "| scale | model | params (M) | GFLOPs | " + " | ".join(rts) + " |",
             "|---|---|---:|---:|" + "---:|" * len(rts)]
    for r in doc["rows"]:
        cells = []
        for rt in rts:
            ms, ratio = r["ms"].get(rt), r["ratio"].get(rt)
            cells.append("error" if ms is None else f"{ms:.1f}" if r["label"] == "stock" else f"{ms:.1f} ({ratio:.2f})")
        gf = f"{r['gflops']:.1f}" if r.get("gflops") else "-"
        lines.append(f"| {r['scale']} | {r['label']} | {r['params'] / 1e6:.2f} | {gf} | " + " | ".join(cells) + " |")
    for rt, why in (doc.get("skipped") or {}).items():
        lines.append(f"\n{rt}: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
