"""Everything mbpatch prints: rich tables for people, one JSON document for scripts."""

from __future__ import annotations

import json
import sys
from typing import Dict, List

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from .verify import pct

STYLE = {"applied": "green", "already applied": "cyan", "not needed": "dim", "failed": "bold red"}

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False)


def steps_table(steps, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("recipe", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("detail", overflow="fold")
    for s in steps:
        t.add_row(s.recipe, f"[{STYLE.get(s.status, '')}]{s.status}[/]", escape(s.detail))
    return t


def diff(text: str) -> None:
    if text:
        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print("[dim]no changes[/]")


def _fmt(v, kind):
    if v is None:
        return "-"
    return f"{v:,}" if kind == "int" else f"{v:.1f}"


def verification(result: Dict, yaml_path: str, snippet: str) -> None:
    if not result.get("ok"):
        err.print(f"[bold red]verification failed:[/] {escape(str(result.get('error')))}", soft_wrap=True)
        tb = result.get("traceback")
        if tb:
            err.print(escape("\n".join(tb.rstrip().splitlines()[-8:])), soft_wrap=True)
        return
    patched, stock = result["patched"], result["stock"]
    t = Table(title=f"patched model ({yaml_path})", title_justify="left")
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
    shapes = ", ".join(f"{k}: ok" for k in patched["forward"])
    console.print(f"[green]forward passes[/] {shapes} (eval mode; WxH, or BxWxH where the batch is not 1)")
    console.print(f"[bold]model yaml[/] {yaml_path}")
    console.print("[bold]train it[/] (from the checkout's root, so Python imports this checkout):")
    console.print(Syntax(snippet, "python", theme="ansi_dark", background_color="default"))


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


def exported(doc: Dict) -> None:
    """verify --export: file, size, and onnxruntime vs PyTorch."""
    ex = doc.get("export", {})
    t = Table(title=f"export check ({doc.get('format')}, imgsz {doc.get('imgsz')})", title_justify="left")
    t.add_column("check", no_wrap=True)
    t.add_column("result", no_wrap=True)
    t.add_column("detail", overflow="fold")
    t.add_row("exported", _yes(ex.get("ok")), escape(str(ex.get("error") or
              f"{ex.get('file')} ({ex.get('size_bytes', 0) / 1e6:.1f} MB, {ex.get('export_s', 0):.1f} s)")))
    if ex.get("ok"):
        diff = ex.get("max_abs_diff")
        detail = (f"output {ex.get('onnx_shape')} vs {ex.get('torch_shape')}" if diff is None else
                  f"max |onnx - torch| {diff:.3g} <= {ex.get('atol', 0):.3g} (1e-4 x max(1, max |torch| = {ex.get('ref_max_abs', 0):.3g}))")
        t.add_row("onnxruntime = PyTorch", _yes(ex.get("equal")), escape(detail))
    t.add_row("wall time", "", f"{doc.get('wall_s', 0):.1f} s")
    console.print(t)
    for note in _notes(ex):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if ex.get("traceback"):
        err.print(escape("\n".join(ex["traceback"].rstrip().splitlines()[-8:])), soft_wrap=True)
