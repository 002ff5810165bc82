"""Benchmark: how long `mbpatch apply --no-verify` takes, and what verification costs over building by hand.

    python benchmarks/apply_verify.py [--runs 7] [--versions 8.2.103 8.4.190] [--out benchmarks/RESULTS-apply.md]

1. apply: the median wall time of `mbpatch apply --no-verify` (a fresh process, as a user runs it) on a fresh
   copy of each release, RT-DETR + mobilenetv4_small. Goal: under 1 s on a 2-core machine.
2. verification overhead: the wall time of `mbpatch verify` divided by the wall time of a plain script that
   does by hand what verification must do, in one process: import the checkout, build the stock and the
   patched model, count each one's GFLOPs at 640 (thop, as Ultralytics does), run each forward at 640x480 in
   eval mode and at batch 2 in train mode, and one backward pass of the patched model. Goal: at most 1.5.
3. startup: `mbpatch --help` and `mbpatch list`, which import neither libcst nor torch.
Not a test: timings depend on the machine; run it by hand and keep the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import unpacked  # noqa: E402  (the same cached real sources the tests use)

BY_HAND = r"""
import sys, yaml, torch, thop
sys.path.insert(0, {root!r})
from ultralytics.nn.tasks import RTDETRDetectionModel
for path, patched in (({stock!r}, False), ({patched!r}, True)):
    d = yaml.safe_load(open(path))
    model = RTDETRDetectionModel(d, nc=80, verbose=False).eval()
    with torch.no_grad():
        thop.profile(model, inputs=(torch.zeros(1, 3, 640, 640),), verbose=False)  # GFLOPs (and the 640x640 pass)
        model(torch.zeros(1, 3, 480, 640))
        model.train()
        try:
            model(torch.zeros(2, 3, 480, 640))  # what a training step feeds
        except TypeError:  # RT-DETR's decoder before 8.3 wants the batch's labels in train mode
            pass
    if patched:  # every parameter gets a gradient (the decoder in eval mode where it wants labels)
        model.model[-1].eval()
        out = model(torch.zeros(1, 3, 160, 160))
        leaves = [t for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor)]
        sum(t.float().sum() for t in leaves).backward()
"""


HEADER = ("# apply / verify timings\n\n`python benchmarks/apply_verify.py`, RT-DETR + mobilenetv4_small; "
          "newest run first. Goal: `apply --no-verify` median under 1 s on a 2-core machine.")


def timed(cmd, **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--versions", nargs="+", default=["8.2.103", "8.4.190"])
    ap.add_argument("--out", default=str(HERE / "RESULTS-apply.md"))
    args = ap.parse_args()
    mbpatch = [sys.executable, "-m", "mbpatch"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"## {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load:.1f} at the start; "
        f"`python benchmarks/apply_verify.py --runs {args.runs} --versions {' '.join(args.versions)}`.",
        "",
        "| release | apply --no-verify median (s) | min | max | verify (s) | by hand (s) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for version in args.versions:
        src = unpacked("ultralytics", version, "ultralytics")
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(args.runs):
                repo = Path(tmp) / f"run{k}"
                shutil.copytree(src, repo)
                times.append(timed(mbpatch + ["apply", "--repo", str(repo), "--backbone", "mobilenetv4_small",
                                              "--arch", "rtdetr", "--no-verify"]))
            repo = Path(tmp) / "run0"
            cfg = repo / "ultralytics/cfg/models/rt-detr"
            script = BY_HAND.format(root=str(repo), stock=str(cfg / "rtdetr-l.yaml"),
                                    patched=str(cfg / "rtdetr-l-mobilenetv4_small.yaml"))
            verify = statistics.median(timed(mbpatch + ["verify", "--repo", str(repo)]) for _ in range(3))
            by_hand = statistics.median(timed([sys.executable, "-c", script], cwd=str(repo)) for _ in range(3))
        med = statistics.median(times)
        lines.append(f"| {version} | {med:.2f} | {min(times):.2f} | {max(times):.2f} | {verify:.1f} | {by_hand:.1f} | "
                     f"{verify / by_hand:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "| command (no checkout work) | median (s) | min | max |", "|---|---|---|---|"]
    for extra in (["--help"], ["list"]):  # the CLI's import cost: neither imports libcst nor torch
        times = [timed(mbpatch + extra) for _ in range(args.runs)]
        lines.append(f"| mbpatch {' '.join(extra)} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
        print(lines[-1], flush=True)
    # newest run first; earlier runs stay below it (a machine's history is part of the result)
    out = Path(args.out)
    text = out.read_text() if out.is_file() else ""
    earlier = text[text.index("\n## "):].lstrip("\n") if "\n## " in text else ""
    out.write_text(HEADER + "\n\n" + "\n".join(lines) + "\n\n" + earlier)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
