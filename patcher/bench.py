"""`mbpatch bench`: is the patched model faster than stock here, on the runtime the user deploys with?

The user's checkout is copied to a temporary folder (its files are never touched); each backbone is applied
there (`mbpatch apply --no-verify`, stacked), then bench_child.py builds the stock and every patched model
with the checkout's own code, fuses them, exports them with the checkout's exporter to each runtime and times
batch-1 inference, all models alternated in every round (bench_child.py says how). The temporary copy is
removed afterwards.

Ratios are patched / stock of the times as printed (ms rounded to 0.01), so a reader can check them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from . import MbpatchError
from .train import _files, model_path, stock_path
from .verify import Target, run_child

CHILD = Path(__file__).with_name("bench_child.py")
RUNTIMES = ("torch", "onnx", "openvino", "litert", "ncnn")
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "runs", "*.pt", "*.onnx", "*.engine")


def split(text: Optional[str]) -> List[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _apply(copy: Path, backbone: str, arch: str, task: str, scale: str, python: Optional[str]) -> None:
    cmd = [sys.executable, "-m", "mbpatch", "apply", "--repo", str(copy), "--backbone", backbone, "--arch", arch,
           "--task", task, "--scale", scale, "--no-verify", "--json"]
    if python:
        cmd += ["--python", python]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        try:
            why = json.loads(proc.stdout).get("error")
        except ValueError:
            why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MbpatchError(f"bench: applying {backbone} to the temporary copy failed: {why}", file=str(copy), step="bench")


def _ratios(rows: List[Dict]) -> None:
    """ms rounded as printed; ratio = patched ms / stock ms of the same scale and runtime, from those numbers."""
    stock = {r["scale"]: r for r in rows if r["label"] == "stock"}
    for r in rows:
        r["ms"] = {rt: round(v, 2) for rt, v in r["ms"].items()}
    for r in rows:
        base = stock.get(r["scale"])
        r["ratio"] = {rt: (v / base["ms"][rt]) for rt, v in r["ms"].items()
                      if base is not None and base["ms"].get(rt)}
        if base is not None:
            r["params_ratio"] = r["params"] / base["params"] if base.get("params") else None


def machine() -> Dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), system=platform.platform(),
                load_average=[round(v, 2) for v in load] if load else None)


def run(root: Path, arch: str, task: str, scales: Sequence[str], backbones: Sequence[str],
        target_of: Callable[[Path, str, str], Target], runtimes: Optional[Sequence[str]] = None, imgsz: int = 640,
        threads: int = 1, runs: int = 20, python: Optional[str] = None, timeout: float = 3600,
        on_stage: Callable[[str], None] = lambda text: None) -> Dict:
    """Bench stock and patched models of `arch` in a temporary copy of `root`; one dict (rows, machine, ...)."""
    tmp = Path(tempfile.mkdtemp(prefix="mbpatch-bench-"))
    t0 = time.perf_counter()
    try:
        copy = tmp / Path(root).name
        on_stage("copying the checkout")
        shutil.copytree(root, copy, ignore=COPY_IGNORE, symlinks=True)
        models, target = [], None
        for backbone in backbones:
            on_stage(f"applying {backbone} to the temporary copy")
            _apply(copy, backbone, arch, task, scales[0], python)
        for scale in scales:
            for i, backbone in enumerate(backbones):
                target = target_of(copy, backbone, scale)
                if i == 0:
                    models.append(dict(label="stock", scale=scale, model=stock_path(target, arch)))
                models.append(dict(label=backbone, scale=scale, model=model_path(target, arch)))
        work = tmp / "work"
        work.mkdir()
        args = dict(kind=target.kind, root=str(copy), package=target.package, arch=arch, task=task, work=str(work),
                    imgsz=imgsz, nc=target.nc, threads=threads, runs=runs, models=models,
                    runtimes=list(runtimes) if runtimes else "default")
        args.update(_files(target))
        res = run_child(CHILD, args, python, timeout, on_stage, args["work"], "bench")
        doc = dict(ok=bool(res.get("ok")), arch=arch, task=task, imgsz=imgsz, threads=threads, runs=runs,
                   machine=machine(), runtimes=res.get("runtimes"), skipped=res.get("skipped"),
                   torch=res.get("torch"), python=res.get("python"))
        if not res.get("ok"):
            doc.update(error=res.get("error"), traceback=res.get("traceback"))
            return doc
        rows = res["rows"]
        _ratios(rows)
        for r in rows:
            r["model"] = Path(r["model"]).name  # the temporary copy is gone afterwards
            r.pop("files", None)
        doc["rows"] = rows
        doc["ok"] = not any(r["errors"] for r in rows)
        return doc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        on_stage(f"done in {time.perf_counter() - t0:.0f} s")


def print_table(doc: Dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .report import console, err

    if doc.get("error"):
        err.print(f"[bold red]bench failed:[/] {escape(str(doc['error']))}", soft_wrap=True)
        return
    m = doc["machine"]
    t = Table(title=f"{doc['arch']} {doc['task']}: batch 1, imgsz {doc['imgsz']}, {doc['threads']} thread(s), "
                    f"median of {doc['runs']} alternated runs, fused", title_justify="left",
              caption=f"{m['cpu']}, {m['cores']} cores, load average {m['load_average']}; torch {doc.get('torch')}; "
                      "x = patched ms / stock ms as printed", caption_justify="left")
    for col in ("scale", "model", "params", "GFLOPs"):
        t.add_column(col, justify="left" if col in ("scale", "model") else "right", no_wrap=True)
    rts = doc.get("runtimes") or []
    for rt in rts:
        t.add_column(f"{rt} ms", justify="right", no_wrap=True)
        t.add_column(f"{rt} x", justify="right", no_wrap=True)
    for r in doc["rows"]:
        cells = [r["scale"], escape(r["label"]), f"{r['params']:,}", f"{r['gflops']:.2f}" if r.get("gflops") else "-"]
        for rt in rts:
            ms, ratio = r["ms"].get(rt), r["ratio"].get(rt)
            cells.append(f"{ms:.2f}" if ms is not None else "error")
            style = "" if r["label"] == "stock" or ratio is None else ("green" if ratio < 1 else "red")
            text = "-" if ratio is None else f"{ratio:.3f}"
            cells.append(f"[{style}]{text}[/]" if style else text)
        t.add_row(*cells)
    console.print(t)
    for rt, why in (doc.get("skipped") or {}).items():
        console.print(f"[yellow]note:[/] {rt} not timed: {escape(why)}", soft_wrap=True)
    for r in doc["rows"]:
        for rt, e in r["errors"].items():
            err.print(f"[red]{escape(r['label'])} ({r['scale']}) on {rt}:[/] {escape(e)}", soft_wrap=True)


class progress:
    """Stage lines on stderr: a status line on a terminal, plain `bench: ...` lines otherwise (logs, CI)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.status, self.t0 = enabled, None, time.perf_counter()

    def __enter__(self):
        from .report import err

        if self.enabled and err.is_terminal:
            self.status = err.status("bench: starting", spinner="dots")
            self.status.__enter__()
        return self.update

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"bench: {text} ({time.perf_counter() - self.t0:.0f} s)"
        if self.status is not None:
            self.status.update(line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.__exit__(*exc)
        return False
