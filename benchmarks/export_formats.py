"""Benchmark: the export formats whose runtimes are too heavy for the test extras, and INT8, on the Must-show models.

For each model of MODELS (default: yolo26n + repvit_m1 and yolov8n + mobilenetv4_hybrid_medium), a fresh copy of
the cached Ultralytics 8.4.190 sources (or `--repo`) is patched with `mbpatch apply --no-verify`, then
`mbpatch verify --export FORMATS --imgsz N --json` runs each format through the checkout's own exporter and
backend, the stock model of the same family and scale alongside, exactly as a user's run would; with `--int8`
the INT8 run (`verify --export openvino,litert --int8`) follows. The verdict and the numbers come from verify's
JSON, not from this script.

    python benchmarks/export_formats.py [--formats litert,mnn,paddle,executorch] [--int8 openvino,litert]
                                        [--imgsz 32] [--only yolov8] [--out benchmarks/RESULTS-export.md]

Writes (prepends) a markdown section to --out with the date, machine, package versions, the commands and one
row per format and model: verdict, file size, export time, the largest error and its tolerance. Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from backbones import cpu_name  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from conftest import unpacked  # noqa: E402  (the same cached real sources the tests use)

MODELS = (("yolo26", "repvit_m1"), ("yolov8", "mobilenetv4_hybrid_medium"))
PACKAGES = ("torch", "ultralytics", "onnxruntime", "openvino", "nncf", "ncnn", "litert-torch", "ai-edge-litert",
            "ai-edge-quantizer", "MNN", "paddlepaddle", "x2paddle", "executorch", "numpy")


def mbpatch(*args, env=None):
    cmd = [sys.executable, "-m", "mbpatch", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def cell(r):
    """One model's numbers for one format, from verify's JSON row."""
    if not r:
        return "", "", ""
    if r.get("error"):
        return "", "", "error: " + r["error"].splitlines()[0][:140].replace("|", "/")
    size = f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else ""
    secs = f"{r['export_s']:.0f}" if r.get("export_s") is not None else ""
    if r.get("top_agreement") is not None:
        rel = f", max rel. error {r['max_rel_error']:.2g}" if r.get("max_rel_error") is not None else ""
        sqnr = "".join(f", {n} SQNR {r[n + '_sqnr_db']:.1f} dB" for n in ("box", "score")
                       if r.get(n + "_sqnr_db") is not None)
        what = f"top-{r['top_k']} kept {r['top_matched']}/{r['top_k']}, score diff {r['score_max_diff']:.2g}{rel}{sqnr}"
    elif r.get("max_abs_diff") is None:
        what = f"output {r.get('out_shape')} vs torch {r.get('torch_shape')}" if "equal" in r else "converted"
    else:
        worst = r.get("worst_diff", r["max_abs_diff"])
        what = f"{worst:.2g} of {r['atol']:.2g} (max {r['max_abs_diff']:.2g}; another image: {r.get('input_sensitivity', 0):.3g})"
    return size, secs, what


def rows_of(doc, arch, backbone):
    out = []
    for fmt, row in doc.get("exports", {}).get("formats", {}).items():
        p, s = row.get("patched"), row.get("stock")
        note = row.get("why") or row.get("pip") or ""
        ps, pt, pw = cell(p)
        ss, st, sw = cell(s)
        out.append(f"| {arch}n + {backbone} | {fmt} | {row['verdict']} | {ps} | {pt} | {pw or note} | {ss} | {st} | {sw} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="litert,mnn,paddle,executorch")
    ap.add_argument("--int8", default="openvino,litert", help="formats for the INT8 run ('' to skip)")
    ap.add_argument("--imgsz", type=int, default=32)
    ap.add_argument("--only", default=None, help="archs to run (yolo26, yolov8)")
    ap.add_argument("--repo", type=Path, help="an unpatched Ultralytics checkout to copy (default: cached 8.4.190)")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-export.md")
    args = ap.parse_args(argv)
    source = args.repo or unpacked("ultralytics", "8.4.190", "ultralytics")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    lines, commands = [], []
    header = ("| model | format | verdict | patched MB | patched export s | patched: worst error of tolerance "
              "| stock MB | stock export s | stock: worst error of tolerance |")
    sep = "|---|---|---|---:|---:|---|---:|---:|---|"
    for arch, backbone in MODELS:
        if args.only and arch not in args.only.split(","):
            continue
        with tempfile.TemporaryDirectory(prefix="mbpatch-export-bench-") as tmp:
            # no digit + n/s/m/l/x in the folder name: Ultralytics strips such a "scale" from the whole path
            repo = Path(tmp) / "ultralytics-src"
            shutil.copytree(source, repo, ignore=shutil.ignore_patterns(".git", ".mbpatch", "__pycache__"))
            env = dict(os.environ, YOLO_CONFIG_DIR=str(Path(tmp) / "yolo-config"))
            proc = mbpatch("apply", "--repo", repo, "--backbone", backbone, "--arch", arch, "--no-verify", env=env)
            if proc.returncode:
                sys.exit(f"apply failed: {proc.stderr[-2000:]}")
            runs = [("fp32", ["--export", args.formats])]
            if args.int8:
                runs.append(("int8", ["--export", args.int8, "--int8"]))
            for label, extra in runs:
                cmd = ["verify", "--repo", repo, *extra, "--imgsz", args.imgsz, "--json", "--work", Path(tmp) / label]
                commands.append(f"`mbpatch apply --repo R --backbone {backbone} --arch {arch} --no-verify && "
                                f"mbpatch {' '.join(map(str, cmd[:1] + ['--repo', 'R'] + cmd[3:-2]))}`")
                t1 = time.perf_counter()
                proc = mbpatch(*cmd, env=env)
                try:
                    doc = json.loads(proc.stdout)
                except json.JSONDecodeError:
                    lines.append(f"| {arch}n + {backbone} | {label} | no JSON (exit {proc.returncode}): "
                                 f"{proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else ''} |||||||")
                    continue
                print(f"{arch} {backbone} {label}: exit {proc.returncode}, {time.perf_counter() - t1:.0f} s", flush=True)
                lines.extend(rows_of(doc, arch, backbone))
    versions = ", ".join(f"{n} {version(n)}" for n in PACKAGES if version(n))
    text = [
        f"## {started:%Y-%m-%d %H:%M} UTC: {args.formats}" + (f"; INT8 {args.int8}" if args.int8 else ""),
        "",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, {platform.platform()}; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after; total {time.perf_counter() - t0:.0f} s",
        f"- python {platform.python_version()}; {versions}",
        f"- command: `python benchmarks/export_formats.py --formats {args.formats} --int8 '{args.int8}' --imgsz "
        f"{args.imgsz}`" + (f" --only {args.only}" if args.only else ""),
        "- runs: " + "; ".join(commands),
        "",
        "fp32 formats: the channel closest to its tolerance (rtol x max(1, max |channel|)), the largest error of "
        "any element, and how far another image moves PyTorch's output (what a wrong export could not hide in). "
        "INT8: the share of PyTorch fp32's 10 best detections that the INT8 model keeps among its 30 best (same "
        "class, IoU >= 0.5), the largest score difference among them, the largest element error over its "
        "channel's scale, and the signal-to-quantization-noise ratio (10 log10 sum ref^2 / sum (int8 - ref)^2) "
        "of the boxes and of the scores. The models are untrained (BatchNorm statistics calibrated on random "
        "images): the numbers compare the patched with the stock model's loss to INT8, not a trained model's "
        "accuracy.",
        "",
        header,
        sep,
        *lines,
        "",
    ]
    old = args.out.read_text() if args.out.exists() else "# Export formats and INT8: benchmark results\n\nNewest run first.\n\n"
    head, _, rest = old.partition("\n## ")
    args.out.write_text(head.rstrip() + "\n\n" + "\n".join(text) + ("\n## " + rest if rest else ""))
    print("\n".join(text))


if __name__ == "__main__":
    main()
