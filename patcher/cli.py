"""The `mbpatch` command line: apply, revert, verify, list, doctor."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import click
from rich.markup import escape

from . import MbpatchError, __version__, engine, report
from . import transfer as transfer_mod
from .checkout import Checkout, detect
from .journal import KEEP_PREFIXES, Journal
from .load_path import loadable
from .recipe_index import kind_recipes
from .recipes import Context, RecipeError
from .templates import AVAILABLE, CATALOG, lookup
from .verify import Target
from .verify import run as run_verify
from .weights import is_keyword, resolve_imagenet


def _fail(e: MbpatchError, as_json: bool = False) -> None:
    if as_json:
        report.dump({"ok": False, "error": str(e), "file": e.file, "step": e.step})
    else:
        report.err.print(f"[bold red]mbpatch:[/] {escape(e.line())}", soft_wrap=True)
    sys.exit(e.exit_code)


def make_context(co: Checkout, backbone: str, arch: str, nc: Optional[int], scale: str, head: str, rect_off: bool,
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
    if style != "backbone" and co.kind != "yolov5":
        raise MbpatchError(f"--style {style} is a YOLOv5 tutorial style; Ultralytics checkouts take the whole backbone",
                           file=str(co.root), step="style")
    if weights is not None and style != "backbone":
        raise MbpatchError("--weights needs --style backbone: the per-block layers have no timm checkpoint",
                           file=str(weights), step="weights")
    weights_source = None
    if weights is not None and is_keyword(weights):  # --weights imagenet
        weights_source = resolve_imagenet(bb)
        weights = weights_source["file"]  # the cache's snapshot path (not resolved: the blob name is a hash)
    elif weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MbpatchError("--weights: no such checkpoint file (pass a timm state dict saved locally)",
                               file=str(weights), step="weights")
        weights = str(path.resolve())
    ctx = Context(co, bb, arch, nc=nc or 80, scale=scale, head=head, rect_off=rect_off, weights=weights, style=style,
                  task=task)
    ctx.weights_source = weights_source  # repo, revision, sha256 of --weights imagenet, for the report
    target = verify_target(ctx)  # refuses up front an arch or task this release lacks (yolo26 before 8.4.0, ...)
    if nc is None:  # the stock yaml's own nc (classify: 1000)
        ctx.nc = stock_nc(target.stock, ctx.nc)
    return ctx


def stock_nc(path: Path, default: int) -> int:
    """The `nc:` the stock yaml declares (read as text: a yaml the checkout ships), else `default`."""
    import re

    try:
        m = re.search(r"^nc:\s*(\d+)", path.read_text(encoding="utf-8"), re.M)
    except OSError:
        return default
    return int(m.group(1)) if m else default


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
        snippet = kind_recipes("yolov5").training_snippet(ctx, target.patched)
        return _with_data(snippet, ctx, "coco128-seg.yaml" if target.task == "segment" else "coco128.yaml")
    cls = target.trainer
    path = target.patched
    if target.load_name and target.load_name != path.name:  # Ultralytics reads the scale from the file name
        path = path.with_name(target.load_name)
    path = loadable(path, target.root / target.package.replace(".", "/"))  # survives Ultralytics' scale regex
    data = {"detect": "coco8.yaml", "segment": "coco8-seg.yaml", "pose": "coco8-pose.yaml", "obb": "dota8.yaml",
            "classify": "imagenet10", "semantic": "cityscapes8.yaml", "depth": "nyu8.yaml"}.get(target.task, "coco8.yaml")
    snippet = f'from ultralytics import {cls}\n\nmodel = {cls}("{path}")\nmodel.train(data="{data}", epochs=100, imgsz=640)'
    return _with_data(snippet, ctx, data)


def _with_data(snippet: str, ctx: Context, sample: str) -> str:
    """The snippet with apply's --data in place of the sample dataset, or a note saying which line to edit."""
    data = getattr(ctx, "data", None)
    if data:
        path = Path(data).expanduser()
        name = str(path.resolve()) if path.is_file() else data  # a dataset name the trainer knows stays a name
        return snippet.replace(sample, name, 1)
    where = "data=" if ctx.checkout.kind != "yolov5" else "--data"
    note = (f"# {sample} is a small sample dataset (downloaded on first use): put your dataset yaml in {where} "
            "(or pass `mbpatch apply --data FILE`)")
    return note + "\n" + snippet


def do_verify(ctx: Context, python: Optional[str], as_json: bool, doc: Dict, patched: Optional[Path] = None,
              quiet: bool = False) -> int:
    """Build stock and patched models (the yaml the arch's recipes write, or `patched`) and report them
    (`quiet`: progress only, the caller reports)."""
    target = verify_target(ctx)
    if patched is not None:
        target.patched = patched
    t0 = time.perf_counter()
    with report.progress(not as_json) as stage:
        result = run_verify(target, python, on_stage=stage)
    result["wall_s"] = time.perf_counter() - t0
    doc["verification"] = result
    snippet = training_snippet(ctx, target)
    doc.update(model_yaml=str(target.patched), model_yaml_to_load=report.yaml_to_load(snippet), training_snippet=snippet)
    lighter = None
    if result.get("ok"):
        doc["heavier_than_stock"] = report.heavier_line(result) is not None
        if doc["heavier_than_stock"] and not as_json:  # scripts get the scales from `mbpatch list --arch A --json`
            lighter = _lighter_scales(ctx, target, python)
    if not as_json and not quiet:
        report.verification(result, str(target.patched), snippet, lighter, result["wall_s"])
    return 0 if result.get("ok") else 1


def _lighter_scales(ctx: Context, target: Target, python: Optional[str]):
    """(arch, backbone, scales at which the backbone is lighter than the stock one), or None (see sizes.py)."""
    from .sizes import lighter_scales

    return lighter_scales(ctx.arch, ctx.backbone.id, python)


class _Group(click.Group):
    """Every command's own errors are MbpatchError (one line, exit 2). Anything else is a bug of mbpatch: one line
    saying so, exit 3, and the traceback only when asked (MBPATCH_DEBUG=1), never a raw traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt as e:  # a command without its own handler: one line too, never "Aborted!"
            _interrupted(e, ctx.invoked_subcommand or "mbpatch", "", False)
        except Exception as e:  # noqa: BLE001 (the last line of defence)
            if os.environ.get("MBPATCH_DEBUG"):
                raise
            where = ctx.invoked_subcommand or "mbpatch"
            report.err.print(
                f"[bold red]mbpatch:[/] internal error in `{escape(where)}` ({escape(type(e).__name__)}: {escape(str(e))}); "
                "this is a bug of mbpatch, please report it with the traceback (run again with MBPATCH_DEBUG=1). "
                "A journal written before it stopped keeps every original: `mbpatch revert` restores them.",
                soft_wrap=True)
            sys.exit(3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mbpatch")
def main():
    """Swap the backbone of an Ultralytics or YOLOv5 checkout for MobileNetV2, MobileNetV4 or RepViT."""


@main.command()
@click.option("--repo", required=True, help="the checkout: repo root or its ultralytics/ package folder")
@click.option("--backbone", required=True, help="catalogue id or tutorial class name (see `mbpatch list`)")
@click.option("--arch", required=True, help="rtdetr, yolov8, yolo11, yolo12 or yolo26 (Ultralytics); yolov5 (YOLOv5)")
@click.option("--task", default="detect", show_default=True, type=click.Choice(list(ALL_TASKS)),
              help="which stock yaml of the family: detect, segment, pose, obb, classify (yolo26 also semantic, depth)")
@click.option("--nc", default=None, type=int, help="number of classes in the generated yaml  [default: the stock yaml's]")
@click.option("--scale", default="n", show_default=True, type=click.Choice(list("nsmlx")),
              help="model scale; rtdetr: l (also the default n) or x picks the rtdetr-l or rtdetr-x neck")
@click.option("--head", default="stock", show_default=True, type=click.Choice(["stock", "light"]),
              help="rtdetr neck: stock rtdetr-l, or the MobileNetV4 tutorial's light one (RepC3 e=0.5, 3 decoder layers)")
@click.option("--rect-off", is_flag=True, help="also set rect=False in the detect trainer (square batches)")
@click.option("--style", default="backbone", show_default=True, type=click.Choice(["backbone", "blocks"]),
              help="yolov5: the whole backbone at layer 0, or MobileNetV2 as inverted-residual block layers (per-block tutorial)")
@click.option("--weights", default=None, help="a local timm checkpoint the backbone loads whenever the model is built, "
              "or `imagenet`: timm's default ImageNet checkpoint, through the Hugging Face cache")
@click.option("--transfer", default=None, help="a stock checkpoint (e.g. yolo26n.pt): its neck and head tensors that fit "
              "are copied into a start file beside it, which `YOLO(yaml).load(file)` trains from")
@click.option("--data", default=None, help="dataset yaml the printed training snippet names (default: a sample dataset and a note)")
@click.option("--dry-run", is_flag=True, help="print the plan and a diff, write nothing")
@click.option("--no-verify", is_flag=True, help="skip building the model afterwards")
@click.option("--python", "python", default=None, help="interpreter that builds the model (default: this one)")
@click.option("--allow-installed", is_flag=True, help="patch a package pip installed (site-packages) anyway")
@click.option("--replace-existing", is_flag=True,
              help="use mbpatch's backbone class even where your checkout already defines one of the same name")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
def apply(repo, backbone, arch, task, nc, scale, head, rect_off, style, weights, transfer, data, dry_run, no_verify, python,
          allow_installed, replace_existing, as_json):
    """Patch a checkout so it builds ARCH with BACKBONE, then verify it."""
    from . import safety

    written = False
    try:
        if arch.lower() not in ALL_ARCHS:  # before looking at the folder: the usage error comes first
            raise MbpatchError(f"unknown --arch '{arch}'; choose one of: {', '.join(ALL_ARCHS)}", file=str(repo), step="arch")
        co = detect(repo)
        safety.refuse_installed(co, allow_installed)
        safety.check_inputs(co, arch.lower(), nc, head, data)
        ctx = make_context(co, backbone, arch.lower(), nc, scale, head, rect_off, style, weights, task)
        ctx.replace_existing = replace_existing
        ctx.data = data  # only the printed snippet uses it
        if not dry_run:  # every input that can be checked is checked before the first byte is written
            safety.check_python(python)
            safety.check_weights(ctx)
        stock_pt = transfer_mod.checked_stock(transfer, co.kind) if transfer else None
        recipes = kind_recipes(co.kind).RECIPES
        with engine.Lock(co.root):
            entries = Journal(co.root).load()["entries"]  # refuses a journal we cannot extend (corrupted, newer)
            safety.refuse_upgraded(co, entries)
            safety.refuse_orphaned(co, entries)
            edited = safety.edited_since_last(co, entries)
            p = engine.plan(ctx, recipes)
            safety.refuse_name_clash(co, ctx.backbone, p.changes, p.originals, replace_existing)
            doc = dict(ok=True, command="apply", checkout=_co_json(co), backbone=ctx.backbone.id, arch=ctx.arch,
                       dry_run=dry_run, steps=report.steps_json(p.steps), changed=sorted(p.changes))
            if ctx.weights_source:
                doc["weights"] = ctx.weights_source
                if not as_json:
                    w = ctx.weights_source
                    report.console.print(f"weights: {w['repo']} {w['filename']} revision {w['revision']} sha256 "
                                         f"{w['sha256']} ({escape(w['file'])})", soft_wrap=True)
            if dry_run:
                doc["diff"] = p.diff()
                if not as_json:
                    report.console.print(report.steps_table(p.steps, f"plan for {co.kind} {co.version} at {co.root}", dry_run=True))
                    report.diff(doc["diff"])
                    report.console.print(f"[dim]dry run: {len(p.changes)} file(s) would change, nothing written[/]")
                else:
                    report.dump(doc)
                return
            meta = dict(backbone=ctx.backbone.id, arch=ctx.arch, task=task, nc=ctx.nc, scale=scale, head=head, style=style,
                        weights=ctx.weights, recipes={s.recipe: s.status for s in p.steps}, kind=co.kind, version=co.version)
            entry = engine.write(p, meta)
            written = entry is not None
        kept_edits = [rel for rel in edited if entry and rel in p.changes]
        if kept_edits:
            doc["edited_before_apply"] = kept_edits
        if not as_json:
            report.console.print(report.steps_table(p.steps, f"{co.kind} {co.version} at {co.root}"))
            report.console.print(f"{len(p.changes)} file(s) written" if p.changes else "nothing to change: already applied")
            if kept_edits:
                report.console.print(
                    f"[yellow]note:[/] {escape(', '.join(kept_edits))} changed since mbpatch last patched it; your version "
                    f"is kept in .mbpatch/originals/{entry['id']}/, and `mbpatch revert` will ask for --force and save it")
        if stock_pt and not dry_run:
            doc["transfer"] = transfer_mod.run(verify_target(ctx), stock_pt, python)
            if not as_json:
                report.console.print(escape(transfer_mod.summary(doc["transfer"])), soft_wrap=True)
        checks = None if no_verify else _doctor_after_apply(co, python, ctx)
        code = 0 if no_verify else do_verify(ctx, python, as_json, doc)
        if checks is not None:
            doc["doctor_problems"] = checks.lines()
            for line in doc["doctor_problems"] if not as_json else []:
                report.console.print(f"[bold red]doctor:[/] {escape(line)}", soft_wrap=True)
        doc["ok"] = code == 0
        if as_json:
            report.dump(doc)
        sys.exit(code)
    except MbpatchError as e:
        _fail(e, as_json)
    except KeyboardInterrupt as e:
        whole = written or isinstance(e, engine.Interrupted)  # Interrupted: raised after a complete write phase
        _interrupted(e, "apply", "the patch is applied and journalled (`mbpatch revert` undoes it)" if whole
                     else "nothing was written", as_json)


def _doctor_after_apply(co: Checkout, python: Optional[str], ctx: Context):
    from .doctor import AfterApply

    return AfterApply(co, python, list(ctx.backbone.names))


def _interrupted(e: KeyboardInterrupt, command: str, state: str, as_json: bool) -> None:
    """One line for a Ctrl-C / SIGTERM: what state the checkout is in. Exit 130 (SIGINT) or 143 (SIGTERM)."""
    signum = getattr(e, "signum", 2)
    name = getattr(e, "name", "SIGINT")
    msg = f"interrupted ({name}) during {command}" + (f": {state}" if state else "")
    if as_json:
        report.dump({"ok": False, "error": msg, "step": "interrupted"})
    else:
        report.err.print(f"[bold red]mbpatch:[/] {escape(msg)}", soft_wrap=True)
    sys.exit(128 + int(signum))


def _leftovers(root: Path) -> bool:
    """What a run killed outside its journal's life left in .mbpatch/ (beyond the copies kept for the user)."""
    folder = root / ".mbpatch"
    if not folder.is_dir():
        return False
    children = list(folder.iterdir())  # an empty one too: the run was killed right after creating it
    return not children or any(not c.name.startswith(KEEP_PREFIXES) for c in children)


def _co_json(co: Checkout) -> Dict:
    return dict(kind=co.kind, version=co.version, layout=co.layout, root=str(co.root), files=co.files)


@main.command()
@click.option("--repo", default=".", show_default=True, help="the checkout")
@click.option("--force", is_flag=True, help="revert files edited since apply, saving your copies under .mbpatch/")
@click.option("--dry-run", is_flag=True, help="say what would be restored, write nothing")
@click.option("--json", "as_json", is_flag=True)
@click.option("--from-markers", "from_markers", is_flag=True,
              help="no journal (.mbpatch/ deleted): undo mbpatch's marked edits by replaying them on the release's files")
@click.option("--source", default=None,
              help="with --from-markers: the release's wheel or unpacked folder (default: pip download it)")
@click.option("--last", is_flag=True, help="undo only the newest apply (see `mbpatch log`); the others stay")
def revert(repo, force, dry_run, as_json, from_markers=False, source=None, last=False):
    """Give back the exact bytes the checkout had before mbpatch."""
    done = False
    try:
        root, version = _revert_root(repo)
        journal = Journal(root)
        if source and not from_markers:
            raise MbpatchError("--source is the release for --from-markers; a journal's originals need none",
                               file=str(source), step="revert")
        if last and from_markers:
            raise MbpatchError("--last pops the newest apply from the journal; --from-markers is for a checkout "
                               "without one", file=str(root), step="revert")
        if from_markers:
            return _revert_from_markers(repo, root, journal, source, force, dry_run, as_json)
        nothing = "no mbpatch journal here: nothing to revert"
        if not journal.exists() and version is not None:  # mbpatch's markers without a journal: say so, never "nothing"
            from . import safety

            safety.refuse_orphaned(detect(repo), [], command="revert")
        lock_file = os.path.lexists(root / engine.LOCK_NAME)  # a killed run's is taken over and removed below
        if not journal.exists() and not _leftovers(root) and not lock_file:
            report.dump({"ok": True, "restored": [], "note": nothing}) if as_json else report.console.print(nothing)
            return
        with engine.Lock(root):  # another run may be writing right now: wait for it (or refuse)
            if not journal.exists() and not _leftovers(root):
                report.dump({"ok": True, "restored": [], "note": nothing}) if as_json else report.console.print(nothing)
                return
            if not journal.exists():  # an apply killed before its journal was written: it changed no file
                if not dry_run:
                    journal.remove(keep_edited=True)
                msg = ("no mbpatch journal here, only leftovers in .mbpatch/ (of an apply stopped before it changed any "
                       "file, or of a revert stopped after it had restored every file)"
                       + ("; they would be removed" if dry_run else "; removed them"))
                report.dump({"ok": True, "restored": [], "note": msg}) if as_json else report.console.print(msg)
                return
            drop = None
            if last:
                from . import stack

                rp, drop = stack.plan_last(root, version), stack.last_entry(root)
            else:
                rp = engine.plan_revert(root, version=version, gone=version is None)
            trained = _trained_checkpoints(root, rp, journal)
            if dry_run:
                doc = dict(ok=True, dry_run=True, restore=sorted(rp.restore), edited=rp.edited,
                           between=[rel for _, rel in rp.between], kept=sorted(rp.kept), upgraded=rp.upgraded,
                           checkpoints_needing_patch=trained[0], checkpoints_note=trained[1])
                if as_json:
                    report.dump(doc)
                else:
                    for rel, data in rp.restore.items():
                        verb = "keep (upgraded)" if rel in rp.kept else "delete" if data is None else "restore"
                        report.console.print(f"would {verb} {rel}")
                    if rp.blocked:
                        how = ("--force would first save your copies under .mbpatch/edited-<time>/" if force else "needs --force")
                        report.console.print(f"[yellow]edited since apply:[/] {escape(', '.join(rp.blocked))} ({how})")
                    _checkpoints_note(trained)
                return
            res = engine.revert(root, rp, force=force, drop=drop)
            done = True
            if drop is not None:
                drop = dict(drop, left=len(journal.entries()) if journal.exists() else 0)
        _revert_report(rp, res, as_json, trained, drop)
    except MbpatchError as e:
        _fail(e, as_json)
    except KeyboardInterrupt as e:
        whole = done or isinstance(e, engine.Interrupted)
        _interrupted(e, "revert", "the revert had finished" if whole else "nothing was reverted", as_json)


def _revert_from_markers(repo, root: Path, journal: Journal, source, force: bool, dry_run: bool, as_json: bool):
    from . import from_markers

    if journal.exists():
        raise MbpatchError("this checkout has its journal: `mbpatch revert` restores the exact bytes from it",
                           file=str(journal.file), step="from-markers")
    with engine.Lock(root):
        rec = from_markers.recover(repo, source)
        rp = rec.plan
        shown = ", ".join(f"{a.backbone} ({'its yaml is gone' if a.guessed else a.arch}"
                          f"{'' if a.task == 'detect' or a.guessed else ' ' + a.task})" for a in rec.applies)
        found = f"replayed {len(rec.applies)} apply(s) [{shown}] on {rec.source}"
        if dry_run:
            doc = dict(ok=True, dry_run=True, restore=sorted(rp.restore), edited=rp.edited, source=rec.source,
                       applies=[a.__dict__ for a in rec.applies], options=rec.options)
            if as_json:
                report.dump(doc)
                return
            report.console.print(escape(found), soft_wrap=True)
            for rel, data in rp.restore.items():
                report.console.print(f"would {'delete' if data is None else 'restore'} {rel}")
            if rp.edited:
                how = "--force would first save your copies under .mbpatch/edited-<time>/" if force else "needs --force"
                report.console.print(f"[yellow]not what mbpatch wrote:[/] {escape(', '.join(rp.edited))} ({how})")
            return
        if rp.edited and not force:
            raise MbpatchError(
                f"{', '.join(rp.edited)} differ from what mbpatch would have written ({found}): your edits, or not this "
                "release; nothing was changed (--force saves your copies under .mbpatch/ and restores the release's "
                "files anyway)", file=rp.edited[0], step="from-markers")
        res = engine.revert(root, rp, force=force)
    tail = f"{found}: every file mbpatch had changed has the release's bytes again"
    if as_json:
        report.dump(dict(ok=True, restored=sorted(res.restored), saved=str(res.saved) if res.saved else None,
                         source=rec.source, applies=[a.__dict__ for a in rec.applies], note=tail))
        return
    for rel in res.restored:
        report.console.print(f"{'removed' if rp.restore.get(rel) is None else 'restored'} {rel}")
    if res.saved:
        report.console.print(f"[yellow]your edited copies were saved in[/] {res.saved}")
    report.console.print(f"[green]{escape(tail)}[/]", soft_wrap=True)


def _revert_root(repo: str):
    """(journal root, checkout version now); version None when the package is gone but its journal is not."""
    try:
        co = detect(repo)
    except MbpatchError:
        path = Path(repo).expanduser()
        for root in (path, path.parent):  # `--repo` may name the package folder pip emptied
            if (root / ".mbpatch" / "journal.json").is_file():
                return root.resolve(), None
        raise
    return co.root, co.version


def _trained_checkpoints(root: Path, rp, journal) -> Tuple[List[str], Optional[str]]:
    """(checkpoints under runs/ that pickle a backbone module revert deletes, one line saying what that means)."""
    from . import checkpoints

    root = Path(root).resolve()
    deleted = [rel for rel, data in rp.restore.items() if data is None and rel not in rp.kept]
    found = checkpoints.needing([root, Path.cwd()], deleted)
    if not found:
        return [], None
    shown = [os.path.relpath(p, root) if root in p.parents else str(p) for p in found]
    from .stack import bring_back

    reverted = journal.entries()[-rp.entries:] if rp.entries else []  # all, or the newest (--last)
    again = " and ".join(f"`{c}`" for c in bring_back(root, reverted, found)) or \
        "`mbpatch apply` with the same backbone"
    note = (f"{len(found)} trained checkpoint(s) hold the patched backbone's classes ({', '.join(shown[:5])}"
            + (", ..." if len(shown) > 5 else "") + f"): without the backbone source they do not load; {again} "
            "brings it back and they load again (an exported ONNX file never needs it)")
    return shown, note


def _checkpoints_note(trained) -> None:
    if trained[1]:
        report.console.print(f"[yellow]note:[/] {escape(trained[1])}", soft_wrap=True)


def _revert_report(rp, res, as_json: bool, trained=([], None), dropped: Optional[Dict] = None) -> None:
    if rp.upgraded:
        tail = (f"this checkout was upgraded from {rp.upgraded[0]} to {rp.upgraded[1]} since mbpatch patched it: undid "
                f"the changes of mbpatch still there; kept {len(res.left)} file(s) as the upgrade left them"
                + (f" ({rp.upgraded[0]}'s originals saved in {res.kept})" if res.kept else "")
                + f"; apply again to patch {rp.upgraded[1]}")
    elif rp.gone:
        tail = ("the package is gone (uninstalled?): removed what mbpatch left"
                + (f"; {len(res.left)} deleted file(s) not recreated (originals saved in {res.kept})" if res.kept else ""))
    elif dropped is not None:
        tail = (f"reverted apply {dropped['id']} ({dropped.get('backbone')} / {dropped.get('arch')}): its files have "
                "the bytes they had before it" + (f"; {dropped['left']} apply(s) stay" if dropped["left"] else
                                                   "; it was the only one: the checkout has its original bytes"))
    else:
        tail = f"reverted {rp.entries} apply(s); the checkout has its original bytes"
    doc = dict(ok=True, restored=sorted(res.restored), entries=rp.entries, saved=str(res.saved) if res.saved else None,
               kept=str(res.kept) if res.kept else None, left=res.left, upgraded=rp.upgraded, note=tail,
               checkpoints_needing_patch=trained[0], checkpoints_note=trained[1])
    if dropped is not None:
        doc.update(reverted_entry=dropped["id"], entries_left=dropped["left"])
    if as_json:
        report.dump(doc)
        return
    for rel in res.restored:
        report.console.print(f"{'removed' if rp.restore.get(rel) is None else 'restored'} {rel}")
    for rel in res.left:
        report.console.print(f"kept {rel} as it is now (its old original is in {res.kept})")
    if res.saved:
        report.console.print(f"[yellow]your edited copies were saved in[/] {res.saved}")
    report.console.print(f"[green]{escape(tail)}[/]")
    _checkpoints_note(trained)


@main.command()
@click.option("--repo", default=".", show_default=True)
@click.option("--model", "model_yaml", default=None, help="a yaml to build (default: the one the last apply wrote)")
@click.option("--python", "python", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option("--train", "train", is_flag=True,
              help="also train 1 epoch on a generated dataset with the checkout's trainer, validate, reload best.pt")
@click.option("--export", "export", default=None, metavar="FORMAT[,FORMAT...]|all",
              help="also export (onnx, torchscript, openvino, ncnn, ... or all) with the checkout's exporter, the stock "
                   "model alongside, and compare each format's runtime with PyTorch")
@click.option("--int8", "int8", is_flag=True, help="with --export openvino,litert: INT8, calibrated on the generated "
              "dataset; reports how much of PyTorch's fp32 answer survives, for the patched and the stock model")
@click.option("--imgsz", default=64, show_default=True, help="image size for --train / --export")
@click.option("--epochs", default=1, show_default=True, help="epochs for --train")
@click.option("--batch", default=8, show_default=True, help="batch size for --train")
@click.option("--work", "work", default=None, help="folder for the dataset, runs and exported file (default: a new temp folder)")
def verify(repo, model_yaml, python, as_json, train=False, export=None, imgsz=64, epochs=1, batch=8, work=None,
           int8=False):
    """Build the patched model again and print its summary."""
    try:
        co = detect(repo)
        if model_yaml is not None and not Path(model_yaml).is_file():
            raise MbpatchError("--model: no such yaml file", file=str(model_yaml), step="verify")
        entries = Journal(co.root).entries()
        if model_yaml is None and not entries:
            raise MbpatchError("nothing applied here yet and no --model given", file=str(co.root), step="verify")
        last = entries[-1] if entries else {}
        arch, task = _arch_of(model_yaml, co.kind) if model_yaml else (last.get("arch", "yolov8"), last.get("task", "detect"))
        ctx = make_context(co, last.get("backbone", "mobilenetv2"), arch,
                           int(last.get("nc", 80)), last.get("scale", "n"), last.get("head", "stock"), False,
                           last.get("style", "backbone"), task=task)
        doc: Dict = dict(ok=True, command="verify")
        code = 0
        if model_yaml is None and len(entries) > 1:  # every live apply first, one row each; the last in full below
            from .stack import verify_earlier

            code = verify_earlier(co, entries, lambda c, d: do_verify(c, python, as_json, d, quiet=True),
                                  make_context, doc, as_json)
        code = do_verify(ctx, python, as_json, doc, Path(model_yaml).resolve() if model_yaml else None) or code
        if "applies" in doc:
            from .stack import add_newest

            add_newest(doc, last, as_json)
        if int8 and not export:
            raise MbpatchError("--int8 needs --export (openvino, litert)", step="verify")
        if code == 0 and (train or export):
            code = _deploy_checks(ctx, doc, python, as_json, model_yaml, train, export, imgsz, epochs, batch,
                                  task, work, int8)
        doc["ok"] = code == 0
        if as_json:
            report.dump(doc)
        sys.exit(code)
    except MbpatchError as e:
        _fail(e, as_json)


def _deploy_checks(ctx, doc, python, as_json, model_yaml, train, export, imgsz, epochs, batch, task, work,
                   int8=False) -> int:
    """verify --train / --export: the checkout's own trainer and exporter (patcher/train.py)."""
    from .train import task_of_yaml, train_check

    target = verify_target(ctx)
    if model_yaml:
        target.patched = Path(model_yaml).resolve()
        task = task_of_yaml(target.patched, task)
    code = 0
    if train:
        doc["train"] = train_check(target, ctx.arch, task, python, imgsz, epochs, batch, work)
        code = code or (0 if doc["train"]["ok"] else 1)
        if not as_json:
            report.training(doc["train"])
    if export:
        from .export import export_formats_check, onnx_view, parse_formats, print_exports

        doc["exports"] = export_formats_check(target, ctx.arch, parse_formats(export), python, imgsz, work, int8=int8)
        code = code or (0 if doc["exports"]["ok"] else 1)
        if onnx_view(doc["exports"]):  # the `--export onnx` document of earlier releases
            doc["export"] = onnx_view(doc["exports"])
        if not as_json:
            print_exports(doc["exports"])
    return code


@main.command()
@click.option("--repo", required=True, help="the checkout (copied to a temporary folder; never written)")
@click.option("--arch", required=True, help="rtdetr, yolov8, yolo11, yolo12, yolo26 or yolov5")
@click.option("--task", default="detect", show_default=True, type=click.Choice(list(ALL_TASKS)))
@click.option("--scale", "scales", default="n", show_default=True, help="scales, comma-separated (n,s)")
@click.option("--backbone", "backbones", default="mobilenetv2_050", show_default=True, help="ids, comma-separated, or all")
@click.option("--runtime", "runtimes", default=None, help="torch,onnx,openvino,litert,ncnn (default: torch, onnx and those installed)")
@click.option("--imgsz", default=640, show_default=True)
@click.option("--threads", default=1, show_default=True, help="threads of every runtime")
@click.option("--runs", default=20, show_default=True, help="timed rounds (every model once per round)")
@click.option("--python", "python", default=None, help="interpreter that builds and times the models")
@click.option("--json", "as_json", is_flag=True)
def bench(repo, arch, task, scales, backbones, runtimes, imgsz, threads, runs, python, as_json):
    """Time stock and patched models (fused, batch 1) on each runtime: is the patched one faster here?"""
    from .bench import RUNTIMES, print_table, progress, split
    from .bench import run as run_bench

    try:
        co = detect(repo)
        names = sorted(AVAILABLE) if backbones.strip() == "all" else split(backbones)
        bad = [r for r in split(runtimes) if r not in RUNTIMES]
        if bad or not names or not split(scales) or threads < 1 or runs < 1 or imgsz < 32:
            raise MbpatchError(f"bench: unknown runtime {', '.join(bad)}" if bad else
                               "bench: needs a backbone, a scale, --threads/--runs >= 1 and --imgsz >= 32", step="bench")
        if co.kind == "yolov5" and len(split(scales)) > 1:  # its yaml files are per scale: one apply, one scale
            raise MbpatchError("bench: YOLOv5 checkouts take one --scale per run", file=str(co.root), step="bench")
        for name in names:
            make_context(co, name, arch, 80, split(scales)[0], "stock", False, task=task)  # refuses bad input up front

        def target_of(copy, backbone, scale):
            return verify_target(make_context(detect(copy), backbone, arch, 80, scale, "stock", False, task=task))

        with progress(True) as stage:
            doc = run_bench(co.root, arch, task, split(scales), names, target_of, split(runtimes) or None, imgsz,
                            threads, runs, python, on_stage=stage)
        if as_json:
            report.dump(doc)
        else:
            print_table(doc)
        sys.exit(0 if doc.get("ok") else 1)
    except MbpatchError as e:
        _fail(e, as_json)


def _arch_of(model_yaml: Optional[str], kind: str = "ultralytics") -> Tuple[str, str]:
    """(arch, task) of a yaml given with --model (recipes/families.py reads it)."""
    import yaml

    from .recipes.families import arch_and_task_of

    path = Path(model_yaml) if model_yaml else None
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) if path and path.is_file() else {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        d = {}
    return arch_and_task_of(d, path.name if path else "", kind)


@main.command(name="list")
@click.option("--arch", "size_arch", default=None, type=click.Choice(list(ALL_ARCHS)),
              help="also each backbone's parameters and GFLOPs at 640 beside the stock ARCH backbone's at each scale")
@click.option("--python", "python", default=None, help="with --arch: the interpreter that measures (torch, Ultralytics)")
@click.option("--json", "as_json", is_flag=True)
def list_(size_arch, python, as_json):
    """Backbones, archs and recipes (with the tutorial step each automates)."""
    from .recipe_index import recipes_and_archs

    backbones = [dict(id=b.id, names=list(b.names), channels=list(b.channels), available=b.id in AVAILABLE)
                 for b in CATALOG.values()]
    recipes, archs = recipes_and_archs()
    from .recipes.families import FAMILIES

    tasks = {a: {t: f"from {v}" for t, v in FAMILIES[a].tasks.items()} for a in archs["ultralytics"]}
    tasks["yolov5"] = {"detect": "from v6.0", "segment": "from v7.0, PyPI 6.2"}
    sizes = None
    if size_arch:
        from .sizes import table

        if not as_json:
            report.err.print(f"measuring the backbones and the stock {size_arch} backbone (the first time; then cached) ...")
        try:
            sizes = table(size_arch, python)
        except MbpatchError as e:
            _fail(e, as_json)
    if as_json:
        report.dump(dict(backbones=backbones, archs=archs, tasks=tasks, recipes=recipes, **({"sizes": sizes} if sizes else {})))
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
    if sizes:
        report.sizes_table(sizes)


@main.command()
@click.argument("release")
@click.argument("dest", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
def fetch(release, dest, as_json):
    """Make DIR a source checkout of RELEASE (ultralytics[==VERSION] or yolov5[==VERSION]) from the package index."""
    from .fetch import check_dest, parse_spec
    from .fetch import fetch as do_fetch

    try:
        parse_spec(release)
        check_dest(dest)  # before saying it downloads
        if not as_json:
            report.console.print(f"downloading the source distribution of {escape(release)} (pip download) ...")
        doc = do_fetch(release, dest)
    except MbpatchError as e:
        _fail(e, as_json)
    if as_json:
        report.dump(doc)
        return
    git = f"git repository, one commit {doc['commit'][:12]}" if doc["commit"] else "git is not installed: not a git repository"
    report.console.print(f"[green]fetched {doc['dist']} {doc['version']}[/] into {escape(doc['root'])} ({doc['layout']}; {git})",
                         soft_wrap=True)
    if doc.get("note"):
        report.console.print(f"[yellow]note:[/] {escape(doc['note'])}", soft_wrap=True)
    else:
        report.console.print(f"next: pip install -e {escape(dest)}   (so `import {doc['dist']}` loads this checkout)", soft_wrap=True)


@main.command(name="log")
@click.option("--repo", default=".", show_default=True, help="the checkout")
@click.option("--json", "as_json", is_flag=True)
def log_(repo, as_json):
    """The applies of the journal, oldest first (`revert --last` undoes the newest)."""
    from .stack import rows

    try:
        root, _ = _revert_root(repo)
        listed = rows(Journal(root).entries())
    except MbpatchError as e:
        _fail(e, as_json)
    if as_json:
        report.dump(dict(ok=True, root=str(root), applies=listed))
    else:
        report.applies_table(listed, str(root))


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
