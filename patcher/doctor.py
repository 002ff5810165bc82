"""`mbpatch doctor` (SPEC §9): explain the state of a checkout and of the environment that will train it.

Sections, each a list of findings with a verdict:
  checkout     kind, version, layout, the files the recipes target, git status;
  recipes      per recipe: applied / absent / partial / not needed / error, judged by running the recipes
               in memory on the files as they are now (so steps done by hand following a tutorial count);
  journal      consistent, interrupted (an apply killed half-way), files edited since apply, leftovers;
  environment  Python, numpy, torch, torchvision (and `torchvision.ops.nms`), thop, and whether the
               checkout imports — probed in a subprocess of `--python` (doctor_child.py, standard library only);
  shadowing    what `import ultralytics` (YOLOv5: `models`) loads from outside the checkout.

Verdicts: ok, info, warn, fail. The exit code is 1 when any finding is "fail" (something that would make
`apply` or training fail), else 0; a path that is not a checkout is exit 2 like every bad input.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import MbpatchError, report
from .advice import install_line
from .checkout import Checkout, detect
from .stack import apply_command
from .child_env import child_env
from .engine import LOCK_NAME, holder, plan_revert
from .journal import DIR, TMP_SUFFIX, Journal, sha256
from .recipe_index import kind_recipes
from .recipes import ALREADY, APPLIED, NOT_NEEDED, Context, RecipeError
from .recipes.families import arch_and_task_of
from .templates import AVAILABLE, CATALOG, lookup

CHILD = Path(__file__).with_name("doctor_child.py")
MARKER = "@@MBPATCH-DOCTOR@@"
ICON = {"ok": "[green]✓ ok[/]", "info": "[dim]· info[/]", "warn": "[yellow]! warn[/]", "fail": "[bold red]✗ FAIL[/]"}
STATE_STYLE = {"applied": "green", "absent": "dim", "partial": "yellow", "not needed": "dim", "error": "bold red"}


@dataclass
class Finding:
    section: str
    item: str
    verdict: str  # ok / info / warn / fail
    detail: str
    fix: str = ""


@dataclass
class Report:
    findings: List[Finding] = field(default_factory=list)
    data: Dict = field(default_factory=dict)

    def add(self, section: str, item: str, verdict: str, detail: str, fix: str = "") -> None:
        self.findings.append(Finding(section, item, verdict, detail, fix))


# --- checkout ----------------------------------------------------------------------------------------------


def _checkout(co: Checkout, rep: Report) -> None:
    name = "Ultralytics" if co.kind == "ultralytics" else "YOLOv5"
    rep.add("checkout", "kind", "ok", f"{name} {co.version} ({co.layout} layout) at {co.root}")
    for role, rel in co.files.items():
        if rel is None:
            rep.add("checkout", role, "info", "not in this release")
        elif (co.root / rel).is_file() and not os.access(co.root / rel, os.W_OK):
            rep.add("checkout", role, "fail", f"{rel} is not writable: apply would refuse to patch it",
                    "make it writable (chmod u+w; chattr -i if it is immutable)")
        elif (co.root / rel).exists():
            rep.add("checkout", role, "ok", rel)
        else:
            rep.add("checkout", role, "fail", f"{rel} is missing", "restore it (git checkout -- it, or reinstall)")
    _git(co, rep)


def _git(co: Checkout, rep: Report) -> None:
    if shutil.which("git") is None:
        rep.add("checkout", "git", "info", "git is not installed; mbpatch's journal is what revert relies on")
        return
    try:
        top = subprocess.run(["git", "-C", str(co.root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=20)
        if top.returncode != 0:
            rep.add("checkout", "git", "info", "not a git repository; mbpatch's journal is what revert relies on")
            return
        st = subprocess.run(["git", "-C", str(co.root), "status", "--porcelain=v1", "-b", "--", "."],
                            capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        rep.add("checkout", "git", "warn", f"git status failed: {e}")
        return
    lines = st.stdout.splitlines()
    branch = lines[0][3:] if lines and lines[0].startswith("## ") else "?"
    changes = [ln[3:] for ln in lines if not ln.startswith("## ")]
    ours = [c for c in changes if c.strip("/").startswith((DIR, LOCK_NAME)) or "AddModules" in c]
    others = [c for c in changes if c not in ours]
    rep.data["git"] = {"branch": branch, "changes": changes}
    if not changes:
        rep.add("checkout", "git", "ok", f"branch {branch}, clean")
    else:
        shown = ", ".join(changes[:8]) + (f" and {len(changes) - 8} more" if len(changes) > 8 else "")
        rep.add("checkout", "git", "info", f"branch {branch}, {len(changes)} changed path(s): {shown}",
                f"add {DIR}/ to .git/info/exclude to hide mbpatch's journal" if ours and not others else "")


# --- recipes -----------------------------------------------------------------------------------------------


@dataclass
class Target:
    backbone: object
    arch: str
    source: str  # where the backbone/arch came from
    nc: int = 80
    scale: str = "n"
    head: str = "stock"
    rect_off: bool = False
    style: str = "backbone"  # yolov5: "backbone" or "blocks"
    yaml: Optional[str] = None  # a model yaml of this checkout that uses the backbone
    weights: Optional[str] = None  # the --weights checkpoint of that apply
    task: str = "detect"  # the --task of that apply


def _yaml_users(co: Checkout) -> List[Target]:
    """Model yamls in the checkout whose layer 0 is a catalogue backbone (mbpatch's or a tutorial's)."""
    import yaml

    cfg = co.files.get("cfg_models")
    base = co.root / cfg if cfg else co.package / "models"
    out = []
    if not base.is_dir():
        return out
    for path in sorted(base.rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not any(b.cls in text for b in CATALOG.values()) and not any(a in text for b in CATALOG.values() for a in b.aliases):
            continue
        try:
            d = yaml.safe_load(text)
            bb = lookup(str(d["backbone"][0][2]))
            nc = int(d.get("nc", 80) or 80)
        except Exception:  # noqa: BLE001 (any yaml a user wrote)
            continue
        if bb is None:
            continue
        arch, task = arch_and_task_of(d, path.name, co.kind)
        out.append(Target(bb, arch, f"model yaml {co.rel(path)}", nc=nc, yaml=co.rel(path), task=task))
    return out


def _exported_backbone(co: Checkout):
    init = co.package / "nn" / "AddModules" / "__init__.py"
    text = init.read_text(encoding="utf-8", errors="replace") if init.is_file() else ""
    for bb in CATALOG.values():
        if any(n in text for n in bb.names):
            return bb
    return None


def _targets(co: Checkout, entries: List[Dict]) -> List[Target]:
    out: List[Target] = []
    for e in entries:
        bb = lookup(str(e.get("backbone", "")))
        if bb is not None:
            out.append(Target(bb, str(e.get("arch")), f"journal entry {e.get('id')}", int(e.get("nc", 80)),
                              str(e.get("scale", "n")), str(e.get("head", "stock")),
                              (e.get("recipes") or {}).get("rect_off") in (APPLIED, ALREADY), str(e.get("style", "backbone")),
                              weights=e.get("weights"), task=str(e.get("task", "detect"))))
    out += _yaml_users(co)
    seen, unique = set(), []
    for t in out:
        key = (t.backbone.id, t.arch, t.task)
        if key in seen:
            for u in unique:  # keep the yaml a journal target builds, found by the scan
                if (u.backbone.id, u.arch, u.task) == key and u.yaml is None:
                    u.yaml = t.yaml
            continue
        seen.add(key)
        unique.append(t)
    if not unique:
        bb = _exported_backbone(co)
        arch = "yolov5" if co.kind == "yolov5" else "yolov8"
        if bb is not None:
            unique.append(Target(bb, arch, "backbone exported by nn/AddModules (no journal, no yaml)"))
        else:
            first = next((b for b in CATALOG.values() if b.id in AVAILABLE), next(iter(CATALOG.values())))
            unique.append(Target(first, arch, "nothing applied: checked for the default backbone and arch"))
    return unique


def _read(co: Checkout, rels: List[str], cache: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
    for rel in rels:
        if rel not in cache:
            path = co.root / rel
            try:
                cache[rel] = path.read_text(encoding="utf-8") if path.is_file() else None
            except (OSError, UnicodeDecodeError):
                cache[rel] = None
    return cache


def _recipe_state(recipe, ctx: Context, co: Checkout, cache: Dict[str, Optional[str]]) -> Dict:
    row = {"recipe": recipe.name, "step": recipe.step, "parts": None}
    try:
        targets = recipe.targets(ctx)
        sources = dict(_read(co, targets, cache))
        outcome = recipe.run(ctx, sources)
    except (RecipeError, MbpatchError) as e:
        if getattr(e, "users_own", None):  # the user's own class of that name: in place, apply would ask first
            row.update(state="applied", detail=f"{e.users_own} (apply refuses to replace it without --replace-existing)",
                       files=targets)
            return row
        row.update(state="error", detail=str(e))
        return row
    except Exception as e:  # noqa: BLE001 (doctor explains any state; a recipe bug must not hide the rest)
        row.update(state="error", detail=f"mbpatch could not judge this step ({type(e).__name__}: {e}); please report it")
        return row
    row["files"] = targets
    if outcome.status == ALREADY:
        row.update(state="applied", detail=outcome.detail)
    elif outcome.status == NOT_NEEDED:
        row.update(state="not needed", detail=outcome.detail)
    elif outcome.status == APPLIED:
        try:
            parts = recipe.inspect(ctx, sources) if hasattr(recipe, "inspect") else None
        except Exception:  # noqa: BLE001 (inspect is best effort; run() already judged the step)
            parts = None
        row["parts"] = parts
        if parts and all(parts.values()):  # every part there, e.g. written by hand with fewer names
            row.update(state="applied", detail=f"every part present (apply would still do: {outcome.detail})")
        elif parts and any(parts.values()):
            missing = [k for k, v in parts.items() if not v]
            row.update(state="partial", detail=f"missing: {', '.join(missing) or 'names of this backbone'}; "
                                               f"apply would do: {outcome.detail}")
        else:
            row.update(state="absent", detail=f"apply would do: {outcome.detail}")
    else:
        row.update(state=outcome.status, detail=outcome.detail)
    return row


def _recipes(co: Checkout, entries: List[Dict], rep: Report) -> None:
    mod = kind_recipes(co.kind)
    cache: Dict[str, Optional[str]] = {}
    groups = []
    for t in _targets(co, entries):
        ctx = Context(co, t.backbone, t.arch, nc=t.nc, scale=t.scale, head=t.head, rect_off=t.rect_off,
                      weights=t.weights, style=t.style, task=t.task)
        rows = [_recipe_state(r, ctx, co, cache) for r in mod.RECIPES]
        group = {"backbone": t.backbone.id, "arch": t.arch, "source": t.source, "yaml": t.yaml, "steps": rows}
        groups.append(group)
        label = f"{t.backbone.id} / {t.arch}" + ("" if t.task == "detect" else f" {t.task}")
        again = apply_command(co.root, dict(backbone=t.backbone.id, arch=t.arch, task=t.task, scale=t.scale,
                                            head=t.head, style=t.style, nc=t.nc, weights=t.weights))
        flagged: List[tuple] = []  # rows that need the user: one line each; the others are summed up in one
        yaml_there = t.yaml is not None or any(r["recipe"] == "model_yaml" and r["state"] == "applied" for r in rows)
        for r in rows:
            verdict = {"applied": "ok", "not needed": "info", "absent": "info", "partial": "warn", "error": "fail"}.get(r["state"], "info")
            fix = ""
            if r["state"] == "error":
                fix = "fix the file as the message says; `mbpatch apply` refuses until then"
                if r["recipe"] == "model_yaml" and "already exists" in r["detail"] and t.source.startswith("model yaml"):
                    verdict, fix = "info", ""  # the user's own yaml under mbpatch's name: apply would refuse, training is fine
            elif r["state"] in ("absent", "partial") and yaml_there and r["recipe"] != "model_yaml":
                verdict = "fail"
                fix = (f"training {t.yaml or 'the generated yaml'} fails without this step: run `{again}` (adds only "
                       "what is missing)" + (f" or `mbpatch revert --repo {shlex.quote(str(co.root))}`" if entries else ""))
            elif r["state"] == "partial":
                fix = f"`{again}` completes it"
            r["verdict"] = verdict
            if verdict in ("warn", "fail"):
                flagged.append((f"{label}: {r['recipe']}", verdict, f"{r['state']}: {r['detail']}", fix))
        states: Dict[str, int] = {}
        for r in rows:
            if r["verdict"] not in ("warn", "fail"):
                states[r["state"]] = states.get(r["state"], 0) + 1
        counted = ", ".join(f"{n} {state}" for state, n in states.items())
        if not flagged:
            rep.add("recipes", label, "ok" if "applied" in states else "info", f"{counted} ({t.source})")
        else:
            for finding in flagged:
                rep.add("recipes", *finding)
            if counted:
                rep.add("recipes", f"{label}: the other steps", "info", counted)
    rep.data["recipes"] = groups


# --- journal -----------------------------------------------------------------------------------------------


def _journal(co: Checkout, rep: Report) -> List[Dict]:
    j = Journal(co.root)
    info: Dict = {"exists": j.exists(), "entries": [], "edited": [], "pending": [], "leftovers": []}
    rep.data["journal"] = info
    folder = co.root / DIR
    saved = sorted(p.name for p in folder.glob("edited-*")) if folder.is_dir() else []
    if saved:
        rep.add("journal", "saved copies", "info", f"copies saved by `revert --force`: {', '.join(f'{DIR}/{s}' for s in saved)}",
                "yours to keep or delete")
    kept = sorted(p.name for p in folder.glob("kept-*")) if folder.is_dir() else []
    if kept:
        rep.add("journal", "kept originals", "info", "originals revert did not write back (replaced by an upgrade or "
                f"removed by pip): {', '.join(f'{DIR}/{k}' for k in kept)}", "yours to keep or delete")
    pid = holder(co.root)
    if pid:
        rep.add("journal", "lock", "warn", f"an mbpatch run (pid {pid}) is working on this checkout right now",
                "wait for it to finish and run doctor again")
    elif (co.root / LOCK_NAME).exists():
        rep.add("journal", "lock", "info", f"{LOCK_NAME} was left by a run that was killed; nobody holds it",
                "the next mbpatch run takes it over (or delete it)")
    if not j.exists():
        if folder.is_dir() and any(not p.name.startswith("edited-") for p in folder.iterdir()):
            rep.add("journal", "journal", "warn", f"{DIR}/ holds originals but no journal.json: an apply was killed before "
                    "it recorded anything, so it changed no file of the checkout", "`mbpatch revert` removes the leftovers")
        elif not _orphans(co, rep):
            rep.add("journal", "journal", "ok", "no journal: mbpatch has not changed this checkout (or it was reverted)")
        return []
    try:
        entries = j.entries()
    except MbpatchError as e:
        info["error"] = str(e)
        rep.add("journal", "journal", "fail", str(e), "see the message; `mbpatch revert` refuses until then")
        return []
    temps = sorted({f["path"] for e in entries for f in e.get("files", [])
                    if (co.root / f["path"]).with_name(f".{Path(f['path']).name}{TMP_SUFFIX}").exists()})
    if temps:  # atomic_write's temp file beside a file whose write was killed before its rename
        info["leftovers"] = temps
        rep.add("journal", "temp files", "warn", f"temporary files of an interrupted write beside: {', '.join(temps)}",
                "`mbpatch revert` removes them")
    for e in entries:
        info["entries"].append({k: e.get(k) for k in ("id", "time", "mbpatch", "backbone", "arch", "state")}
                               | {"files": [f["path"] for f in e.get("files", [])]})
    # the files as they are now, judged against the last entry that wrote each
    later: Dict[str, int] = {}
    for e in entries:
        for f in e["files"]:
            later[f["path"]] = e["id"]
    missing_originals = []
    for e in entries:
        for f in e["files"]:
            if not f["new"]:
                copy = j.dir / "originals" / str(e["id"]) / f["path"]
                if not copy.is_file() or sha256(copy.read_bytes()) != f["sha_before"]:
                    missing_originals.append(f["path"])
        if e.get("state") != "done":
            written, not_yet = [], []
            for f in e["files"]:
                path = co.root / f["path"]
                cur = sha256(path.read_bytes()) if path.is_file() else None
                if later[f["path"]] != e["id"] or cur == f["sha_after"]:
                    written.append(f["path"])
                elif cur == f["sha_before"]:
                    not_yet.append(f["path"])
            info["pending"].append({"id": e["id"], "written": written, "not_written": not_yet})
            rep.add("journal", f"apply #{e['id']}", "fail",
                    f"interrupted: apply of {e.get('backbone')} / {e.get('arch')} was killed half-way; "
                    f"written: {', '.join(written) or 'none'}; not yet written: {', '.join(not_yet) or 'none'}",
                    "`mbpatch revert` restores the originals (then apply again)")
    ids = {str(e["id"]) for e in entries}
    stray = sorted(p.name for p in (j.dir / "originals").glob("*") if p.name not in ids) if (j.dir / "originals").is_dir() else []
    if stray:
        rep.add("journal", "leftovers", "warn", f"{DIR}/originals/{', '.join(stray)} belong to an apply killed before it "
                "recorded anything; it changed no file of the checkout", "`mbpatch revert` (or the next apply) clears them")
    if missing_originals:
        rep.add("journal", "originals", "fail",
                f"the saved originals of {', '.join(sorted(set(missing_originals)))} are missing or damaged in {DIR}/originals/",
                "revert cannot restore those files: restore them with git (or reinstall), then delete .mbpatch/")
        return entries
    try:
        rp = plan_revert(co.root, version=co.version)
        info["edited"] = rp.edited
        info["between"] = [rel for _, rel in rp.between]
        info["upgraded"] = rp.upgraded
    except (MbpatchError, OSError) as e:
        rep.add("journal", "journal", "fail", f"cannot plan a revert: {e}", "restore the files with git and delete .mbpatch/")
        return entries
    if rp.already and len(rp.already) < len(rp.restore) and all(e.get("state") == "done" for e in entries):
        rep.add("journal", "half reverted", "warn", f"already back to their original bytes: {', '.join(rp.already)} "
                "(a revert was interrupted?)", "`mbpatch revert` finishes it")
    if rp.upgraded:
        rep.add("journal", "upgraded", "fail",
                f"this checkout was upgraded from {rp.upgraded[0]} to {rp.upgraded[1]} since mbpatch patched it"
                + (f"; replaced by the upgrade: {', '.join(rp.kept)}" if rp.kept else ""),
                f"`mbpatch revert` undoes what is left of the {rp.upgraded[0]} patch and keeps {rp.upgraded[1]}'s files; "
                "then `mbpatch apply` again (apply refuses until then)")
    if rp.between:
        rep.add("journal", "edited between applies", "warn",
                "edited between two applies: " + ", ".join(f"{rel} (before apply #{i})" for i, rel in rp.between),
                f"`mbpatch revert` refuses; `mbpatch revert --force` saves those versions under {DIR}/edited-<time>/")
    if rp.edited:
        rep.add("journal", "edited", "warn", f"changed since mbpatch wrote them: {', '.join(rp.edited)}",
                f"`mbpatch revert` refuses; `mbpatch revert --force` first saves your copies under {DIR}/")
    done = [e for e in entries if e.get("state") == "done"]
    if done and not rp.edited and not rp.between and not rp.upgraded and not missing_originals:
        rep.add("journal", "journal", "ok", f"{len(entries)} apply(s) recorded, every patched file as mbpatch wrote it; "
                "`mbpatch revert` restores the original bytes")
    return entries


def _orphans(co: Checkout, rep: Report) -> bool:
    """mbpatch's `# mbpatch:` markers without a journal (.mbpatch/ deleted): a FAIL naming them, and the way out."""
    from .safety import MARK, find_markers, orphan_advice

    marks = find_markers(co)
    if not marks:
        return False
    rep.data["journal"]["orphaned"] = [{"path": rel, "line": line} for rel, line in marks]
    rep.add("journal", "orphaned patch", "fail",
            f"mbpatch's edits ({MARK} markers at {', '.join(f'{rel}:{line}' for rel, line in marks)}) but no "
            f"{DIR}/journal.json: the journal was deleted (git clean, a copy without hidden folders), so `mbpatch revert` "
            "cannot restore these files and apply refuses to stack on them",
            orphan_advice(co, marks))
    return True


# --- environment and shadowing -----------------------------------------------------------------------------


def _probe_args(co: Checkout, names: List[str]) -> Dict:
    if co.kind == "yolov5" and co.layout == "git":  # a git clone: `models` at the root
        module, expected, target = "models", co.root / "models", "models.yolo"
    elif co.kind == "yolov5":
        module, expected, target = co.package.name, co.package, f"{co.package.name}.models.yolo"
    else:
        module, expected, target = co.package.name, co.package, f"{co.package.name}.nn.tasks"
    return dict(root=str(co.root), module=module, expected=str(expected), target=target, names=names)


def probe(co: Checkout, python: Optional[str], names: List[str], timeout: float = 300) -> Dict:
    args = _probe_args(co, names)
    env = child_env(keep_pythonpath=True)
    with tempfile.TemporaryDirectory(prefix="mbpatch-doctor-") as cwd:  # "outside the checkout"
        try:
            proc = subprocess.run([python or sys.executable, str(CHILD), json.dumps(args)], capture_output=True,
                                  text=True, env=env, cwd=cwd, timeout=timeout)
        except FileNotFoundError:
            return {"ok": False, "error": f"interpreter not found: {python}", "args": args}
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"the environment probe timed out after {timeout:.0f} s", "args": args}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            out = json.loads(line[len(MARKER):])
            out["args"] = args
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"ok": False, "error": "the probe died: " + " | ".join(tail), "args": args}


def _environment(co: Checkout, python: Optional[str], env: Dict, patched: bool, rep: Report) -> None:
    py = python or sys.executable
    if not env.get("ok"):
        rep.add("environment", "python", "fail", f"{py}: {env.get('error')}",
                "pass --python the interpreter of your training environment")
        return
    p = env["python"]
    rep.add("environment", "python", "ok", f"Python {p['version']} ({p['executable']})")
    n = env["numpy"]
    rep.add("environment", "numpy", "ok" if n["ok"] else "fail", n.get("version") if n["ok"] else n["error"],
            "" if n["ok"] else f"{py} -m pip install numpy")
    t = env["torch"]
    torch_v = t.get("version", "")
    if t["ok"]:
        rep.add("environment", "torch", "ok", f"{torch_v} ({'CUDA available' if t.get('cuda') else 'CPU only'})")
    else:
        rep.add("environment", "torch", "fail", t["error"], f"{py} -m pip install torch")
    tv = env["torchvision"]
    if not tv["ok"]:
        fix = (f"{py} -m pip install torchvision" if tv.get("error") == "not installed" else
               f"install the torchvision built for torch {torch_v} (pytorch.org lists the matching pairs)")
        rep.add("environment", "torchvision", "fail", f"import fails: {tv['error']}", fix)
    elif tv.get("nms") and not tv["nms"]["ok"]:
        rep.add("environment", "torchvision", "fail",
                f"{tv['version']} does not work with torch {torch_v}: torchvision.ops.nms fails ({tv['nms'].get('error')})",
                f"install the torchvision built for torch {torch_v} (pytorch.org lists the matching pairs)")
    else:
        rep.add("environment", "torchvision", "ok", f"{tv['version']} (ops.nms works)")
    th = env["thop"]
    dists = ", ".join(f"{d['name']} {d['version']}" for d in th.get("distributions", []))
    if th["ok"]:
        rep.add("environment", "thop", "ok", dists or "thop importable")
    else:
        rep.add("environment", "thop", "warn", f"not importable ({th['error']}): GFLOPs are not printed",
                f"{py} -m pip install ultralytics-thop")
    ci = env["checkout_import"]
    target = env["args"]["target"]
    if not ci["ok"]:
        rep.add("environment", "checkout import", "fail", f"`import {target}` from the checkout fails: {ci['error']}",
                install_line(ci["error"], co.root, python) or "install what the error names into --python's environment")
    elif not ci.get("loaded_from_checkout"):
        rep.add("environment", "checkout import", "fail", f"`import {target}` with the checkout first on sys.path loaded {ci.get('file')}",
                "something on sys.path overrides the checkout; check PYTHONPATH and .pth files")
    elif ci.get("missing_names"):
        rep.add("environment", "checkout import", "fail",
                f"`import {target}` works but does not define {', '.join(ci['missing_names'])}: the yaml names cannot resolve",
                "`mbpatch apply` again (the register step)")
    else:
        rep.add("environment", "checkout import", "ok", f"`import {target}` from the checkout works")
    _shadowing(co, env["shadowing"], patched, py, rep)


def _shadowing(co: Checkout, sh: Dict, patched: bool, py: str, rep: Report) -> None:
    module = sh["module"]
    has_setup = any((co.root / f).is_file() for f in ("pyproject.toml", "setup.py"))
    fix_install = (f"cd {co.root} && {py} -m pip install -e ." if has_setup else
                   f"export PYTHONPATH={co.root} (this checkout has no setup.py/pyproject.toml for `pip install -e .`)")
    dist = sh.get("distribution")
    if sh.get("found") is None:
        rep.add("shadowing", f"import {module}", "warn",
                f"`import {module}` fails outside the checkout: only scripts run from {co.root} find it",
                f"run training from {co.root}, or {fix_install}")
    elif sh.get("is_checkout"):
        how = f" (editable install of {dist['name']} {dist['version']})" if dist and dist.get("editable") else ""
        rep.add("shadowing", f"import {module}", "ok", f"`import {module}` from anywhere loads this checkout{how}")
    else:
        other = f"{sh['found']}" + (f" ({dist['name']} {dist['version']})" if dist else "")
        verdict = "fail" if patched else "warn"
        why = ("so training scripts outside the checkout build with the stock code and your patched yaml fails"
               if patched else "so edits to this checkout have no effect on scripts run elsewhere")
        rep.add("shadowing", f"import {module}", verdict,
                f"`import {module}` outside the checkout loads another copy: {other}, {why}",
                f"{py} -m pip uninstall {dist['name'] if dist else module}, then {fix_install}; or run training from {co.root}")


# --- entry point -------------------------------------------------------------------------------------------


def diagnose(repo: str, python: Optional[str] = None, environment: bool = True) -> Report:
    co = detect(repo)
    rep = Report()
    rep.data["checkout"] = dict(kind=co.kind, version=co.version, layout=co.layout, root=str(co.root),
                                package=str(co.package), files=co.files)
    _checkout(co, rep)
    entries = _journal(co, rep)
    _recipes(co, entries, rep)
    patched = bool(entries) or any(r["state"] in ("applied", "partial") and r["recipe"] in ("register", "channel_index")
                                   for g in rep.data["recipes"] for r in g["steps"])
    if environment:
        names = sorted({n for g in rep.data["recipes"] for r in g["steps"]
                        if r["recipe"] == "register" and r["state"] == "applied"
                        for n in lookup(g["backbone"]).names})
        env = probe(co, python, names)
        rep.data["environment"] = env
        _environment(co, python, env, patched, rep)
        from .doctor_training import check as training_checks  # what makes training fail (issue 10)

        training_checks(co, python, env, rep)
    _with_repo(co, rep)
    return rep


def _with_repo(co: Checkout, rep: Report) -> None:
    """Each `mbpatch revert ...` doctor advises names the checkout, so it runs as printed from any folder."""
    plain = re.compile(r"`mbpatch revert(?![^`]*--repo)")
    with_repo = f"`mbpatch revert --repo {shlex.quote(str(co.root))}"
    for f in rep.findings:
        f.detail, f.fix = plain.sub(with_repo, f.detail), plain.sub(with_repo, f.fix)


class AfterApply:
    """Doctor's environment, shadowing and training checks for a checkout just patched, run in a thread while
    verification builds the model (apply prints their failures after its summary: the training snippet it
    printed would fail without the fix)."""

    def __init__(self, co: Checkout, python: Optional[str], names: List[str]):
        self.failed: List[Finding] = []
        self._thread = threading.Thread(target=self._run, args=(co, python, names), daemon=True)
        self._thread.start()

    def _run(self, co: Checkout, python: Optional[str], names: List[str]) -> None:
        try:
            rep = Report()
            env = probe(co, python, names)
            _environment(co, python, env, True, rep)
            from .doctor_training import check as training_checks

            training_checks(co, python, env, rep)
            self.failed = [f for f in rep.findings if f.verdict == "fail"]
        except Exception:  # noqa: BLE001 (advice only: `mbpatch doctor` says the same, with its own errors)
            self.failed = []

    def lines(self, timeout: float = 300) -> List[str]:
        """One line per failing check, with its fix."""
        self._thread.join(timeout)
        return [f"{f.section}: {f.item}: {f.detail}" + (f" -> {f.fix}" if f.fix else "") for f in self.failed]


def to_json(rep: Report) -> Dict:
    problems = [f for f in rep.findings if f.verdict == "fail"]
    return dict(
        ok=not problems,
        exit=1 if problems else 0,
        problems=[f"{f.section}: {f.item}: {f.detail}" for f in problems],
        warnings=[f"{f.section}: {f.item}: {f.detail}" for f in rep.findings if f.verdict == "warn"],
        checks=[f.__dict__ for f in rep.findings],
        **rep.data,
    )


def render(rep: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    for section in ("checkout", "journal", "recipes", "environment", "shadowing", "training"):
        rows = [f for f in rep.findings if f.section == section]
        if not rows:
            continue
        title = section
        if section == "recipes":
            title = "recipes (one line per apply where every step is in place; --json lists each step)"
        t = Table(title=escape(title), title_justify="left", show_header=False)
        t.add_column("verdict", no_wrap=True)
        t.add_column("check", no_wrap=True)
        t.add_column("finding", overflow="fold")
        for f in rows:
            text = escape(f.detail)
            if section == "recipes" and f.detail.split(":", 1)[0] in STATE_STYLE:
                state = f.detail.split(":", 1)[0]
                text = f"[{STATE_STYLE.get(state, '')}]{escape(state)}[/]" + escape(f.detail[len(state):])
            if f.fix:
                text += f"\n[dim]→ {escape(f.fix)}[/]"
            t.add_row(ICON[f.verdict], escape(f.item), text)
        report.console.print(t)
    problems = [f for f in rep.findings if f.verdict == "fail"]
    warns = [f for f in rep.findings if f.verdict == "warn"]
    if problems:
        report.console.print(f"[bold red]doctor: {len(problems)} problem(s) would make apply or training fail[/]"
                             + (f", {len(warns)} warning(s)" if warns else ""))
    else:
        report.console.print("[green]doctor: nothing here would make apply or training fail[/]"
                             + (f" ({len(warns)} warning(s))" if warns else ""))


def run_doctor(repo: str, python, as_json: bool) -> int:
    rep = diagnose(repo, python)
    if as_json:
        report.dump(to_json(rep))
    else:
        render(rep)
    return 1 if any(f.verdict == "fail" for f in rep.findings) else 0
