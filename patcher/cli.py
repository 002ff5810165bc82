"""The `mbpatch` command line: apply, revert, verify, list, doctor."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import click
from rich.markup import escape

from . import MbpatchError, __version__, engine, report
from .checkout import Checkout, detect
from .journal import Journal
from .recipes import Context, RecipeError
from .templates import AVAILABLE, CATALOG, lookup
from .verify import Target
from .verify import run as run_verify


def kind_recipes(kind: str):
    if kind == "yolov5":
        from .recipes import yolov5 as kind_module
    else:
        from .recipes import ultralytics as kind_module
    return kind_module


def _fail(e: MbpatchError, as_json: bool = False) -> None:
    if as_json:
        report.dump({"ok": False, "error": str(e), "file": e.file, "step": e.step})
    else:
        report.err.print(f"[bold red]mbpatch:[/] {escape(e.line())}", soft_wrap=True)
    sys.exit(e.exit_code)


def make_context(co: Checkout, backbone: str, arch: str, nc: int, scale: str, head: str, rect_off: bool,
                 style: str = "backbone", weights: Optional[str] = None, task: str = "detect") -> Context:
    bb = lookup(backbone)
    if bb is None:
        known = ", ".join(sorted(CATALOG))
        raise MbpatchError(f"unknown --backbone '{backbone}'; choose one of: {known}", file=str(co.root), step="backbone")
    if bb.id not in AVAILABLE:
        raise MbpatchError(f"backbone '{bb.id}' has no template in mbpatch {__version__} yet", file=str(co.root), step="backbone")
    if arch not in ALL_ARCHS:
        raise MbpatchError(f"unknown --arch '{arch}'; choose one of: {', '.join(ALL_ARCHS)}", file=str(co.root), step="arch")
    archs = kind_recipes(co.kind).ARCHS
    if arch not in archs:
        raise MbpatchError(
            f"--arch {arch} cannot be built by this {co.kind} {co.version} checkout; it builds: {', '.join(archs)}",
            file=str(co.root), step="arch",
        )
    if task not in ALL_TASKS:
        raise MbpatchError(f"unknown --task '{task}'; choose one of: {', '.join(ALL_TASKS)}", file=str(co.root), step="task")
    if nc < 1:
        raise MbpatchError("--nc must be at least 1", file=str(co.root), step="nc")
    if style != "backbone" and co.kind != "yolov5":
        raise MbpatchError(f"--style {style} is a YOLOv5 tutorial style; Ultralytics checkouts take the whole backbone",
                           file=str(co.root), step="style")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MbpatchError("--weights: no such checkpoint file (pass a timm state dict saved locally)",
                               file=str(weights), step="weights")
        if style != "backbone":
            raise MbpatchError("--weights needs --style backbone: the per-block layers have no timm checkpoint",
                               file=str(weights), step="weights")
        weights = str(path.resolve())
    ctx = Context(co, bb, arch, nc=nc, scale=scale, head=head, rect_off=rect_off, weights=weights, style=style, task=task)
    verify_target(ctx)  # refuses up front an arch or task this release lacks (yolo26 before 8.4.0, ...)
    return ctx


ALL_ARCHS = ("rtdetr", "yolov8", "yolo11", "yolo12", "yolo26", "yolov5")
ALL_TASKS = ("detect", "segment", "pose", "obb", "classify", "semantic", "depth")


def verify_target(ctx: Context) -> Target:
    """What verification builds (and training loads): the recipes' plan for this context, as a Target."""
    from .recipes.build_plan import PlanError

    co = ctx.checkout
    try:
        if co.kind == "yolov5":
            p = kind_recipes("yolov5").build_plan(ctx)
        else:
            from .recipes.ultralytics.model_yaml import build_plan

            p = build_plan(ctx)
    except PlanError as e:
        raise MbpatchError(str(e), file=str(co.root), step=e.step) from None
    except RecipeError as e:
        raise MbpatchError(str(e), file=str(co.root), step="arch") from None
    return Target(co.root, p.package, p.model, co.root / p.stock, co.root / p.out, p.scaled, p.scale, ctx.nc,
                  kind=p.kind, task=p.task, trainer=p.trainer, load_name=p.load_name)


def training_snippet(ctx: Context, target: Target) -> str:
    if ctx.checkout.kind == "yolov5":
        return kind_recipes("yolov5").training_snippet(ctx, target.patched)
    cls = target.trainer
    path = target.patched
    if target.load_name and target.load_name != path.name:  # Ultralytics reads the scale from the file name
        path = path.with_name(target.load_name)
    data = {"detect": "coco8.yaml", "segment": "coco8-seg.yaml", "pose": "coco8-pose.yaml", "obb": "dota8.yaml",
            "classify": "imagenet10", "semantic": "cityscapes8.yaml", "depth": "nyu8.yaml"}.get(target.task, "coco8.yaml")
    return f'from ultralytics import {cls}\n\nmodel = {cls}("{path}")\nmodel.train(data="{data}", epochs=100, imgsz=640)'


def do_verify(ctx: Context, python: Optional[str], as_json: bool, doc: Dict, patched: Optional[Path] = None) -> int:
    """Build stock and patched models (the yaml the arch's recipes write, or `patched`) and report them."""
    target = verify_target(ctx)
    if patched is not None:
        target.patched = patched
    t0 = time.perf_counter()
    result = run_verify(target, python)
    result["wall_s"] = time.perf_counter() - t0
    doc["verification"] = result
    if not as_json:
        report.verification(result, str(target.patched), training_snippet(ctx, target))
    return 0 if result.get("ok") else 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mbpatch")
def main():
    """Swap the backbone of an Ultralytics or YOLOv5 checkout for MobileNetV2, MobileNetV4 or RepViT."""


@main.command()
@click.option("--repo", required=True, help="the checkout: repo root or its ultralytics/ package folder")
@click.option("--backbone", required=True, help="catalogue id or tutorial class name (see `mbpatch list`)")
@click.option("--arch", required=True, help="rtdetr, yolov8, yolo11, yolo12 or yolo26 (Ultralytics); yolov5 (YOLOv5)")
@click.option("--task", default="detect", show_default=True, type=click.Choice(list(ALL_TASKS)),
              help="which stock yaml of the family: detect, segment, pose, obb, classify (yolo26 also semantic, depth)")
@click.option("--nc", default=80, show_default=True, help="number of classes in the generated yaml")
@click.option("--scale", default="n", show_default=True, type=click.Choice(list("nsmlx")),
              help="model scale; rtdetr: l (also the default n) or x picks the rtdetr-l or rtdetr-x neck")
@click.option("--head", default="stock", show_default=True, type=click.Choice(["stock", "light"]),
              help="rtdetr neck: stock rtdetr-l, or the MobileNetV4 tutorial's light one (RepC3 e=0.5, 3 decoder layers)")
@click.option("--rect-off", is_flag=True, help="also set rect=False in the detect trainer (square batches)")
@click.option("--style", default="backbone", show_default=True, type=click.Choice(["backbone", "blocks"]),
              help="yolov5: the whole backbone at layer 0, or MobileNetV2 as inverted-residual block layers (per-block tutorial)")
@click.option("--weights", default=None, help="a local timm checkpoint the backbone loads whenever the model is built")
@click.option("--dry-run", is_flag=True, help="print the plan and a diff, write nothing")
@click.option("--no-verify", is_flag=True, help="skip building the model afterwards")
@click.option("--python", "python", default=None, help="interpreter that builds the model (default: this one)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
def apply(repo, backbone, arch, task, nc, scale, head, rect_off, style, weights, dry_run, no_verify, python, as_json):
    """Patch a checkout so it builds ARCH with BACKBONE, then verify it."""
    try:
        if arch.lower() not in ALL_ARCHS:  # before looking at the folder: the usage error comes first
            raise MbpatchError(f"unknown --arch '{arch}'; choose one of: {', '.join(ALL_ARCHS)}", file=str(repo), step="arch")
        co = detect(repo)
        ctx = make_context(co, backbone, arch.lower(), nc, scale, head, rect_off, style, weights, task)
        recipes = kind_recipes(co.kind).RECIPES
        with engine.Lock(co.root):
            Journal(co.root).load()  # refuse up front a journal we cannot extend (corrupted, or from a newer mbpatch)
            p = engine.plan(ctx, recipes)
            doc = dict(ok=True, command="apply", checkout=_co_json(co), backbone=ctx.backbone.id, arch=ctx.arch,
                       dry_run=dry_run, steps=report.steps_json(p.steps), changed=sorted(p.changes))
            if dry_run:
                doc["diff"] = p.diff()
                if not as_json:
                    report.console.print(report.steps_table(p.steps, f"plan for {co.kind} {co.version} at {co.root}"))
                    report.diff(doc["diff"])
                    report.console.print(f"[dim]dry run: {len(p.changes)} file(s) would change, nothing written[/]")
                else:
                    report.dump(doc)
                return
            meta = dict(backbone=ctx.backbone.id, arch=ctx.arch, task=task, nc=nc, scale=scale, head=head, style=style, weights=ctx.weights,
                        recipes={s.recipe: s.status for s in p.steps})
            engine.write(p, meta)
        if not as_json:
            report.console.print(report.steps_table(p.steps, f"{co.kind} {co.version} at {co.root}"))
            report.console.print(f"{len(p.changes)} file(s) written" if p.changes else "nothing to change: already applied")
        code = 0 if no_verify else do_verify(ctx, python, as_json, doc)
        doc["ok"] = code == 0
        if as_json:
            report.dump(doc)
        sys.exit(code)
    except MbpatchError as e:
        _fail(e, as_json)


def _leftovers(root: Path) -> bool:
    """Anything an apply killed before its journal existed may have left: .mbpatch/ (beyond --force copies)."""
    folder = root / ".mbpatch"
    return folder.is_dir() and any(not c.name.startswith("edited-") for c in folder.iterdir())


def _co_json(co: Checkout) -> Dict:
    return dict(kind=co.kind, version=co.version, layout=co.layout, root=str(co.root), files=co.files)


@main.command()
@click.option("--repo", default=".", show_default=True, help="the checkout")
@click.option("--force", is_flag=True, help="revert files edited since apply, saving your copies under .mbpatch/")
@click.option("--dry-run", is_flag=True, help="say what would be restored, write nothing")
@click.option("--json", "as_json", is_flag=True)
def revert(repo, force, dry_run, as_json):
    """Give back the exact bytes the checkout had before mbpatch."""
    try:
        co = detect(repo)
        journal = Journal(co.root)
        nothing = "no mbpatch journal here: nothing to revert"
        if not journal.exists() and not _leftovers(co.root) and engine.holder(co.root) is None:
            report.dump({"ok": True, "restored": [], "note": nothing}) if as_json else report.console.print(nothing)
            return
        with engine.Lock(co.root):  # another run may be writing right now: wait for it (or refuse)
            if not journal.exists() and not _leftovers(co.root):
                report.dump({"ok": True, "restored": [], "note": nothing}) if as_json else report.console.print(nothing)
                return
            if not journal.exists():  # an apply killed before its journal was written: it changed no file
                if not dry_run:
                    journal.remove(keep_edited=True)
                msg = ("no mbpatch journal here, only what an interrupted apply left in .mbpatch/ before it changed "
                       "any file" + ("; it would be removed" if dry_run else "; removed it"))
                report.dump({"ok": True, "restored": [], "note": msg}) if as_json else report.console.print(msg)
                return
            rp = engine.plan_revert(co.root)
            if dry_run:
                doc = dict(ok=True, dry_run=True, restore=sorted(rp.restore), edited=rp.edited)
                if as_json:
                    report.dump(doc)
                else:
                    for rel, data in rp.restore.items():
                        report.console.print(f"would {'delete' if data is None else 'restore'} {rel}")
                    if rp.edited:
                        report.console.print(f"[yellow]edited since apply:[/] {escape(', '.join(rp.edited))} (needs --force)")
                return
            saved = engine.revert(co.root, rp, force=force)
        doc = dict(ok=True, restored=sorted(rp.restore), entries=rp.entries, saved=str(saved) if saved else None)
        if as_json:
            report.dump(doc)
        else:
            for rel, data in rp.restore.items():
                report.console.print(f"{'removed' if data is None else 'restored'} {rel}")
            if saved:
                report.console.print(f"[yellow]your edited copies were saved in[/] {saved}")
            report.console.print(f"[green]reverted {rp.entries} apply(s); the checkout has its original bytes[/]")
    except MbpatchError as e:
        _fail(e, as_json)


@main.command()
@click.option("--repo", default=".", show_default=True)
@click.option("--model", "model_yaml", default=None, help="a yaml to build (default: the one the last apply wrote)")
@click.option("--python", "python", default=None)
@click.option("--json", "as_json", is_flag=True)
def verify(repo, model_yaml, python, as_json):
    """Build the patched model again and print its summary."""
    try:
        co = detect(repo)
        entries = Journal(co.root).entries()
        if model_yaml is None and not entries:
            raise MbpatchError("nothing applied here yet and no --model given", file=str(co.root), step="verify")
        last = entries[-1] if entries else {}
        arch, task = _arch_of(model_yaml, co.kind) if model_yaml else (last.get("arch", "yolov8"), last.get("task", "detect"))
        ctx = make_context(co, last.get("backbone", "mobilenetv2"), arch,
                           int(last.get("nc", 80)), last.get("scale", "n"), last.get("head", "stock"), False,
                           last.get("style", "backbone"), task=task)
        doc: Dict = dict(ok=True, command="verify")
        code = do_verify(ctx, python, as_json, doc, Path(model_yaml).resolve() if model_yaml else None)
        doc["ok"] = code == 0
        if as_json:
            report.dump(doc)
        sys.exit(code)
    except MbpatchError as e:
        _fail(e, as_json)


def _arch_of(model_yaml: Optional[str], kind: str = "ultralytics") -> Tuple[str, str]:
    """(arch, task) of a yaml given with --model (recipes/ultralytics/families.py reads it)."""
    import yaml

    from .recipes.ultralytics.families import arch_and_task_of

    path = Path(model_yaml) if model_yaml else None
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) if path and path.is_file() else {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        d = {}
    return arch_and_task_of(d, path.name if path else "", kind)


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json):
    """Backbones, archs and recipes (with the tutorial step each automates)."""
    from .recipes import ultralytics as ul
    from .recipes import yolov5 as y5

    backbones = [dict(id=b.id, names=list(b.names), channels=list(b.channels), available=b.id in AVAILABLE)
                 for b in CATALOG.values()]
    recipes = {kind: [dict(name=r.name, step=r.step) for r in mod.RECIPES] for kind, mod in (("ultralytics", ul), ("yolov5", y5))}
    from .recipes.ultralytics.families import FAMILIES

    archs = {"ultralytics": list(ul.ARCHS), "yolov5": list(y5.ARCHS)}
    tasks = {a: {t: f"from {v}" for t, v in FAMILIES[a].tasks.items()} for a in ul.ARCHS}
    tasks["yolov5"] = {"detect": "from v6.0", "segment": "from v7.0, PyPI 6.2"}
    if as_json:
        report.dump(dict(backbones=backbones, archs=archs, tasks=tasks, recipes=recipes))
        return
    from rich.table import Table

    t = Table(title="backbones", title_justify="left")
    for col in ("id", "yaml names", "channels (s4, s8, s16, s32)", "template"):
        t.add_column(col)
    for b in backbones:
        t.add_row(b["id"], ", ".join(b["names"]), str(tuple(b["channels"])), "yes" if b["available"] else "[dim]not yet[/]")
    report.console.print(t)
    report.console.print("archs: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in archs.items()))
    t = Table(title="archs and tasks (--arch, --task; the first release that has each)", title_justify="left")
    t.add_column("arch")
    t.add_column("tasks")
    for arch, ts in tasks.items():
        t.add_row(arch, ", ".join(f"{k} ({v})" for k, v in ts.items()))
    report.console.print(t)
    for kind, rs in recipes.items():
        t = Table(title=f"{kind} recipes", title_justify="left")
        t.add_column("recipe")
        t.add_column("tutorial step")
        for r in rs:
            t.add_row(r["name"], r["step"])
        report.console.print(t)


@main.command()
@click.option("--repo", default=".", show_default=True)
@click.option("--python", "python", default=None)
@click.option("--json", "as_json", is_flag=True)
def doctor(repo, python, as_json):
    """Say what state a checkout is in and what is wrong with the environment."""
    from .doctor import run_doctor

    try:
        sys.exit(run_doctor(repo, python, as_json))
    except MbpatchError as e:
        _fail(e, as_json)


if __name__ == "__main__":
    main()
