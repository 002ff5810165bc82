"""Benchmark: mbpatch's backbone templates against timm's implementation of the same networks.

For every catalogue backbone: construction time and forward latency at 1x3x640x640 (eval,
torch.no_grad, a few warm-up runs, then the median of N timed runs) of our template and of timm's
`features_only` model (pretrained=False). For MobileNetV4, timm's features model ends with the 1x1 conv
to 960 channels, which our backbone leaves out; that block is replaced by an identity so both run the
same layers. Ours and timm's are timed alternately, run by run, so background load hits both alike.

    python benchmarks/backbones.py [--runs 7] [--warmup 2] [--size 640] [--only ID ...] [--out FILE]

Prints a markdown table (and writes it to --out with the date, machine and versions). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"


def load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build_timm(timm, backbone):
    model = timm.create_model(backbone.reference, pretrained=False, features_only=True)
    if backbone.family == "mobilenetv4":
        model.blocks[4] = nn.Identity()  # the 1x1 conv to 960 channels, not part of our backbone
    return model


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed forward passes per model (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forward passes first")
    parser.add_argument("--builds", type=int, default=3, help="constructions per model (median)")
    parser.add_argument("--size", type=int, default=640, help="input height and width")
    parser.add_argument("--only", nargs="*", help="catalogue ids (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help="also write the table, with date/machine/versions, here")
    parser.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = parser.parse_args(argv)

    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    catalogue = load_file(TEMPLATES / "__init__.py", "_mbpatch_bench_catalogue")
    families = {}
    x = torch.randn(1, 3, args.size, args.size, device=device)
    rows = []
    header = ("| backbone | timm reference | params (M) | build ours (ms) | build timm (ms) "
              "| latency ours (ms) | latency timm (ms) | ours / timm |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for bid, b in catalogue.CATALOG.items():
        if args.only and bid not in args.only:
            continue
        if b.family not in families:
            families[b.family] = load_file(b.template, f"_mbpatch_bench_{b.family}")
        cls = getattr(families[b.family], b.cls)

        build_ours = median_time(cls, args.builds)
        build_ref = median_time(lambda: build_timm(timm, b), args.builds)
        ours, ref = cls().eval().to(device), build_timm(timm, b).eval().to(device)
        params = sum(p.numel() for p in ours.parameters())
        with torch.no_grad():
            for _ in range(args.warmup):
                ours(x)
                ref(x)
            sync()
            t_ours, t_ref = [], []
            for i in range(args.runs):
                # alternate which one goes first, so slow drifts in background load cancel out
                for model, times in ((ours, t_ours), (ref, t_ref))[:: 1 if i % 2 == 0 else -1]:
                    t = time.perf_counter()
                    model(x)
                    sync()
                    times.append(time.perf_counter() - t)
        lat_ours, lat_ref = statistics.median(t_ours), statistics.median(t_ref)
        row = (f"| {bid} | {b.reference} | {params / 1e6:.2f} | {build_ours * 1e3:.0f} | {build_ref * 1e3:.0f} "
               f"| {lat_ours * 1e3:.1f} | {lat_ref * 1e3:.1f} | {lat_ours / lat_ref:.2f} |")
        rows.append(row)
        print(row, flush=True)
        del ours, ref

    if args.out:
        if device.type == "cuda":
            machine = f"{torch.cuda.get_device_name(0)} (CUDA), host {cpu_name()} with {os.cpu_count()} cores"
        else:
            machine = f"{cpu_name()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
        info = [
            f"## {device.type.upper()}, input 1x3x{args.size}x{args.size}",
            "",
            f"- date: {datetime.date.today().isoformat()}",
            f"- machine: {machine}",
            f"- python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}",
            f"- input 1x3x{args.size}x{args.size}, eval, torch.no_grad, {args.warmup} warm-up runs, "
            f"median of {args.runs} runs (ours and timm alternately); build = median of {args.builds} constructions",
            "- timm side: `timm.create_model(<reference>, pretrained=False, features_only=True)`; for MobileNetV4 "
            "its final 1x1 conv to 960 channels (`blocks.4`) is replaced by an identity, as ours ends before it",
            f"- command: `python benchmarks/backbones.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
            "",
            header,
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
        text = "\n".join(info)
        if args.append and args.out.exists():
            text = args.out.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + text
        else:
            text = "# Backbone benchmark: mbpatch templates vs timm\n\n" + text
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
