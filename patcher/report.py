"""Everything mbpatch prints: rich tables for people, one JSON document for scripts."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Dict, List, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .verify import pct

STYLE = {"applied": "green", "already applied": "cyan", "not needed": "dim", "failed": "bold red"}

# piped output is 120 columns wide unless COLUMNS says otherwise (then rich reads it)
console = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)
err = Console(stderr=True, highlight=False)


def steps_table(steps, title: str, dry_run: bool = False) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("recipe", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("detail", overflow="fold")
    for s in steps:
        status = "would apply" if dry_run and s.status == "applied" else s.status  # a plan writes nothing
        t.add_row(s.recipe, f"[{STYLE.get(s.status, '')}]{status}[/]", escape(s.detail))
    return t


def diff(text: str) -> None:
    if text:
        from rich.syntax import Syntax

        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print("[dim]no changes[/]")


def _fmt(v, kind):
    if v is None:
        return "-"
    return f"{v:,}" if kind == "int" else f"{v:.1f}"


def verification(result: Dict, yaml_path: str, snippet: str, lighter_scales=None, wall_s=None) -> None:
    if not result.get("ok"):
        err.print(f"[bold red]verification failed:[/] {escape(str(result.get('error')))}", soft_wrap=True)
        tb = result.get("traceback")
        if tb:
            err.print(escape("\n".join(tb.rstrip().splitlines()[-8:])), soft_wrap=True)
        if result.get("install"):
            err.print(f"[yellow]missing package:[/] {escape(result['install'])}", soft_wrap=True, highlight=False)
        return
    patched, stock = result["patched"], result["stock"]
    rows = patched["summary"]
    note = None
    if rows and rows[0]["i"] == 4:  # a whole backbone at yaml layer 0 (the five-slot convention)
        note = ("row 4 is the backbone (yaml layer 0): its four maps (strides 4, 8, 16, 32) fill output slots 0-4, "
                "slot 0 empty, so the next layer is 5 and the head's from 2, 3, 4 are its stride 8, 16, 32 maps")
    t = Table(title=f"patched model ({yaml_path})", title_justify="left", caption=note, caption_justify="left")
    for col, just in (("", "right"), ("from", "right"), ("n", "right"), ("params", "right"), ("module", "left"), ("arguments", "left")):
        t.add_column(col, justify=just, overflow="fold")
    for r in patched["summary"]:
        t.add_row(str(r["i"]), escape(str(r["from"])), str(r["n"]), f"{r['params']:,}", r["module"], escape(r["args"]))
    console.print(t)
    c = Table(title="stock vs patched", title_justify="left")
    for col in ("", "stock", "patched", "change"):
        c.add_column(col, justify="right")
    for key, label, kind in (("layers", "layers", "int"), ("params", "parameters", "int"), ("gflops", "GFLOPs @640", "float")):
        change = pct(patched.get(key), stock.get(key))
        c.add_row(label, _fmt(stock.get(key), kind), _fmt(patched.get(key), kind), "-" if change is None else f"{change:+.1f}%")
    console.print(c)
    line = heavier_line(result, lighter_scales)
    if line:
        console.print(line, soft_wrap=True)
    shapes = ", ".join(f"{k}: ok" for k in patched["forward"])
    console.print(f"[green]forward passes[/] {shapes} (eval mode; WxH, or BxWxH where the batch is not 1)")
    grad = patched.get("gradient")
    if grad:
        console.print(f"[green]gradient check[/] all {grad['params']} backbone parameters receive a gradient "
                      "(one backward pass, train mode)")
    console.print(f"[bold]model yaml[/] {escape(yaml_path)}", soft_wrap=True)
    load = yaml_to_load(snippet)
    if load and load != yaml_path:
        console.print(f"[bold]load it as[/] {escape(load)} (the name carries the scale, as for the stock files)", soft_wrap=True)
    console.print("[bold]train it[/] (from the checkout's root, so Python imports this checkout):")
    # plain and uncropped: what is printed must paste as it is, at any terminal width
    console.print(snippet, soft_wrap=True, markup=False, highlight=False, crop=False)
    if wall_s is not None:
        console.print(f"[dim]verified in {wall_s:.1f} s[/]")


def heavier_line(result: Dict, lighter_scales=None) -> Optional[str]:
    """One line when the patched model is heavier than the stock one (parameters or GFLOPs at 640), else None.

    `lighter_scales`: (arch, backbone id, scales at which this backbone is lighter than the stock backbone),
    from `mbpatch list --arch`'s table; None when it could not be computed.
    """
    patched, stock = result.get("patched") or {}, result.get("stock") or {}
    grew = [(label, pct(patched.get(key), stock.get(key))) for key, label in (("params", "parameters"), ("gflops", "GFLOPs"))]
    grew = [(label, p) for label, p in grew if p is not None and p > 0]
    if not grew:
        return None
    what = ", ".join(f"{p:+.0f}% {label}" for label, p in grew)
    line = f"[yellow]heavier than the stock model:[/] {what} (a lighter backbone does not make every model lighter)"
    if lighter_scales is not None:
        arch, bb, scales = lighter_scales
        if scales:
            line += (f"; {bb} is lighter than the stock {arch} backbone (parameters and GFLOPs at 640) at scale(s) "
                     f"{', '.join(scales)}: try --scale {scales[0]}")
        else:
            line += f"; {bb} is not lighter than the stock {arch} backbone at any scale"
        line += f" (`mbpatch list --arch {arch}`)"
    return line


def yaml_to_load(snippet: str) -> Optional[str]:
    """The yaml the training snippet names (Ultralytics: `YOLO("...yaml")`; YOLOv5: `--cfg ...yaml`)."""
    m = re.search(r"""\(\s*["']([^"']+\.ya?ml)["']""", snippet) or re.search(r"--cfg\s+(\S+\.ya?ml)", snippet)
    return m.group(1) if m else None


@contextmanager
def progress(enabled: bool = True):
    """A status line naming the verification stage while the build process runs; without a terminal (CI logs,
    a pipe), one line per stage on stderr instead.

    Yields the callback that `verify.run` calls with each stage.
    """
    if not enabled:
        yield lambda text: None
        return
    t0 = time.perf_counter()
    if not err.is_terminal:  # CI logs, `| tee`: one plain line per stage, so a long build is visibly alive
        yield lambda text: err.print(f"verifying: {escape(text)} ({time.perf_counter() - t0:.0f} s so far)",
                                     soft_wrap=True, highlight=False)
        return
    with err.status("verifying: starting the build process", spinner="dots") as status:
        yield lambda text: status.update(f"verifying: {escape(text)} [dim]({time.perf_counter() - t0:.0f} s so far)[/]")


def sizes_table(sizes: Dict) -> None:
    """`mbpatch list --arch`: each backbone alone beside the stock backbone of the arch at each scale."""
    stock = sizes.get("stock")
    scales = list(stock["scales"]) if stock else []
    title = f"backbones alone vs the stock {sizes['arch']} backbone (parameters, GFLOPs at 640x640)"
    t = Table(title=title, title_justify="left", caption=(f"stock rows: the backbone section of {stock['source']}"
              if stock else f"stock backbone not measured: {sizes.get('error') or 'Ultralytics not importable'}"),
              caption_justify="left")
    t.add_column("backbone", no_wrap=True)
    t.add_column("params", justify="right")
    t.add_column("GFLOPs", justify="right")
    t.add_column("lighter than stock at", no_wrap=True)
    for scale in scales:
        s = stock["scales"][scale]
        t.add_row(f"[dim]stock {sizes['arch']}{'' if sizes['arch'] == 'rtdetr' else scale}[/]", f"[dim]{s['params']:,}[/]",
                  f"[dim]{_fmt(s['gflops'], 'float')}[/]", "")
    for bid, v in sizes["backbones"].items():
        if v is None:
            t.add_row(bid, "-", "-", "not measured")
            continue
        lighter = sizes.get("lighter_at", {}).get(bid) or []
        t.add_row(bid, f"{v['params']:,}", _fmt(v["gflops"], "float"), ", ".join(lighter) if lighter else ("none" if stock else "-"))
    console.print(t)
    if sizes.get("error"):
        err.print(f"[yellow]not everything could be measured:[/] {escape(str(sizes['error']))}", soft_wrap=True)


def dump(doc: Dict) -> None:
    print(json.dumps(doc, indent=1, default=str))


def steps_json(steps) -> List[Dict]:
    return [dict(recipe=s.recipe, step=s.step, status=s.status, detail=s.detail, files=s.files) for s in steps]


def _yes(v) -> str:
    return "[green]yes[/]" if v else "[bold red]no[/]"


def _notes(step: Dict) -> List[str]:
    """What the check had to set for this checkout in this environment (the user's training needs it too)."""
    out = []
    env = step.get("env_set")
    if env:
        out.append(f"set {', '.join(f'{k}={v}' for k, v in env.items() if k != 'why')}: {env.get('why')}")
    if step.get("install"):
        out.append(f"missing package: {step['install']}")
    compat = step.get("compat")
    if compat:
        out.append(f"aliased {', '.join(f'{k} = {v}' for k, v in compat.items() if k != 'why')}: {compat.get('why')}")
    return out


def training(doc: Dict) -> None:
    """verify --train: one row per verdict, then where the runs folder is."""
    tr, rl = doc.get("train", {}), doc.get("reload", {})
    t = Table(title=f"train check ({doc.get('task')}, {doc.get('epochs')} epoch(s), imgsz {doc.get('imgsz')}, "
                    f"batch {doc.get('batch')})", title_justify="left")
    t.add_column("check", no_wrap=True)
    t.add_column("result", no_wrap=True)
    t.add_column("detail", overflow="fold")
    losses = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in (tr.get("losses") or {}).items())
    metrics = ", ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in (tr.get("metrics") or {}).items())
    t.add_row("trained", _yes(tr.get("ok")), escape(str(tr.get("error") or f"{tr.get('train_s', 0):.1f} s")))
    t.add_row("loss finite", _yes(doc.get("loss_finite")), escape(losses or "-"))
    t.add_row("metrics computed", _yes(doc.get("metrics_computed")), escape(metrics or "-"))
    detail = rl.get("error") or f"{rl.get('loader', rl.get('class'))}: {rl.get('class')}, output {rl.get('output')}"
    t.add_row("best.pt reloads (new process)", _yes(doc.get("reload_ok")), escape(str(detail)))
    t.add_row("wall time", "", f"{doc.get('wall_s', 0):.1f} s")
    console.print(t)
    for note in _notes(tr):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if tr.get("save_dir"):
        console.print(f"[bold]runs folder[/] {tr['save_dir']} (best.pt in weights/); dataset in {doc.get('work')}/data")
    if tr.get("traceback"):
        err.print(escape("\n".join(tr["traceback"].rstrip().splitlines()[-8:])), soft_wrap=True)


def applies_table(rows: List[Dict], root: str) -> None:
    """`mbpatch log`: one row per apply of the journal, oldest first."""
    if not rows:
        console.print(f"no apply recorded at {escape(root)}")
        return
    t = Table(title=f"applies at {root} (oldest first; `mbpatch revert --last` undoes the last)", title_justify="left")
    for col in ("id", "time", "family", "task", "scale", "backbone", "files"):
        t.add_column(col, overflow="fold")
    for r in rows:
        state = "" if r["state"] == "done" else f" [yellow]({r['state']})[/]"
        t.add_row(str(r["id"]), str(r["time"]), str(r["family"]), str(r["task"]), str(r["scale"]),
                  escape(str(r["backbone"])) + state, escape(", ".join(r["files"])))
    console.print(t)


def applies_verified(rows: List[Dict], skipped: List[Dict]) -> None:
    """`verify` after stacked applies: one row per apply built, then one line per apply not built and why."""
    t = Table(title="every live apply, built again (oldest first)", title_justify="left")
    for col in ("apply", "backbone", "family", "task", "scale", "params (stock -> patched)", "result"):
        t.add_column(col, overflow="fold")
    for r in rows:
        params = "-" if r.get("params") is None else f"{r.get('stock_params') or 0:,} -> {r['params']:,}"
        result = "[green]ok[/]" if r["ok"] else f"[red]failed[/]: {escape(str(r.get('error')))}"
        t.add_row(str(r["id"]), escape(str(r["backbone"])), str(r["arch"]), str(r["task"]), str(r["scale"]), params, result)
    console.print(t)
    for r in skipped:
        console.print(f"[yellow]not built:[/] apply {r['id']} ({escape(str(r['backbone']))} / {r['arch']} {r['task']}): "
                      f"{escape(str(r['reason']))}", soft_wrap=True)
