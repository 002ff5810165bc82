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
    grad = patched.get("gradient")
    if grad:
        console.print(f"[green]gradient check[/] all {grad['params']} backbone parameters receive a gradient "
                      "(one backward pass, train mode)")
    console.print(f"[bold]model yaml[/] {yaml_path}")
    console.print("[bold]train it[/] (from the checkout's root, so Python imports this checkout):")
    console.print(Syntax(snippet, "python", theme="ansi_dark", background_color="default"))


def dump(doc: Dict) -> None:
    print(json.dumps(doc, indent=1, default=str))


def steps_json(steps) -> List[Dict]:
    return [dict(recipe=s.recipe, step=s.step, status=s.status, detail=s.detail, files=s.files) for s in steps]
