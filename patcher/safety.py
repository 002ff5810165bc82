"""Checks `apply` runs before it writes a byte (README "Safety"): each either passes or raises MbpatchError.

- installed packages: a `--repo` pip installed (site-packages, a `*.dist-info` beside it) is refused;
- upgrades: the journal's recorded version differs from the checkout's version now;
- orphaned patches: no journal, but mbpatch's `# mbpatch:` markers are in the checkout's files;
- edits between applies: files changed since the last entry wrote them (recorded, not refused: the next
  entry's saved original is the user's version, and revert lists it);
- `--python` runs, `--weights` is a checkpoint the backbone can load (names and shapes).

Nothing here imports torch unless `--weights` is given.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import MbpatchError
from .checkout import Checkout, installed_package
from .journal import DIR, sha256

MARK = "# mbpatch:"  # what every comment mbpatch writes starts with (recipes/cst_anchors.py MARK)


def refuse_installed(co: Checkout, allowed: bool) -> None:
    why = installed_package(co)
    if why and not allowed:
        raise MbpatchError(
            f"this is an installed package, not a source checkout ({why}): pip would overwrite or orphan the patch; "
            "clone the source and `pip install -e .` it, or pass --allow-installed to patch it anyway",
            file=str(co.package), step="detect")


def upgraded(co: Checkout, entries: List[Dict]) -> Optional[Tuple[str, str]]:
    """(recorded version, version now) when the checkout changed release since the journal was written."""
    from .engine import recorded_version

    was = recorded_version(entries)
    if was and was != co.version:
        return was, co.version
    return None


def refuse_upgraded(co: Checkout, entries: List[Dict]) -> None:
    up = upgraded(co, entries)
    if up:
        raise MbpatchError(
            f"this checkout was upgraded from {up[0]} to {up[1]} since mbpatch patched it; nothing was changed: "
            f"run `mbpatch revert` first (it undoes what is left of the {up[0]} patch and keeps {up[1]}'s files), "
            "then apply again", file=str(co.root / DIR / "journal.json"), step="upgrade")


def edited_since_last(co: Checkout, entries: List[Dict]) -> List[str]:
    """Files whose bytes differ from what the last entry writing them left (edited by hand since)."""
    accept: Dict[str, set] = {}
    for e in entries:
        for f in e["files"]:
            ok = {f["sha_after"]}
            if e.get("state") != "done":  # a killed apply may not have written it yet: still as before is no edit
                ok |= accept.get(f["path"], {f["sha_before"]})
            accept[f["path"]] = ok
    out = []
    for rel, ok in accept.items():
        path = co.root / rel
        now = sha256(path.read_bytes()) if path.is_file() else None
        if now not in ok:
            out.append(rel)
    return out


# --- orphaned patches ------------------------------------------------------------------------------------


def _scan_files(co: Checkout) -> List[Path]:
    """The files mbpatch's recipes may have written: the targeted files, AddModules/, the model yamls."""
    out: List[Path] = []
    for rel in co.files.values():
        if rel and (co.root / rel).is_file():
            out.append(co.root / rel)
    folders = [co.root / rel for rel in (co.files.get("cfg_models"), co.files.get("models_dir")) if rel]
    if co.kind == "ultralytics":
        folders.append(co.package / "nn" / "AddModules")
    for folder in folders:
        if folder.is_dir():
            out += sorted(p for p in folder.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file())
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def find_markers(co: Checkout) -> List[Tuple[str, int]]:
    """(path, first line number) of every file holding mbpatch's `# mbpatch:` marker."""
    found = []
    for path in _scan_files(co):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if MARK not in text:
            continue
        line = text[: text.index(MARK)].count("\n") + 1
        found.append((co.rel(path), line))
    return found


def orphan_advice(co: Checkout, marks: List[Tuple[str, int]]) -> str:
    ours = [rel for rel, line in marks if line == 1]  # files mbpatch created (its header is line 1)
    edited = [rel for rel, line in marks if line != 1]
    parts = []
    if edited:
        parts.append(f"restore {', '.join(edited)} (`git checkout -- <file>`, or `mbpatch revert --from-markers`, which "
                     "replays mbpatch's edits on the release's own files to undo them exactly)")
    if ours:
        parts.append(f"delete {', '.join(ours)} (created by mbpatch)")
    return " and ".join(parts)


def refuse_orphaned(co: Checkout, entries: List[Dict], command: str = "apply") -> None:
    if entries:
        return
    marks = find_markers(co)
    if marks:
        where = ", ".join(f"{rel}:{line}" for rel, line in marks)
        then = "then apply again" if command == "apply" else "then the checkout has its original bytes"
        raise MbpatchError(
            f"this checkout carries mbpatch's edits ({MARK} at {where}) but has no .mbpatch/ journal (deleted?), so "
            f"`mbpatch revert` cannot restore them; nothing was changed: {orphan_advice(co, marks)}, {then}",
            file=marks[0][0], step="journal")


# --- inputs ------------------------------------------------------------------------------------------------


def check_python(python: Optional[str]) -> None:
    """`--python` exists and runs a Python program (a quick probe, before anything is written)."""
    if python is None:
        return
    try:
        proc = subprocess.run([python, "-c", "import sys; print(sys.version_info[0])"], capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise MbpatchError("--python did not answer a one-line probe in 120 s; nothing was changed",
                           file=python, step="python") from None
    except OSError as e:
        raise MbpatchError(f"--python cannot be run ({e.strerror}); nothing was changed: pass the interpreter of your "
                           "training environment", file=python, step="python") from None
    if proc.returncode != 0 or proc.stdout.strip() != "3":
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise MbpatchError(f"--python is not a working Python 3 ({tail}); nothing was changed",
                           file=python, step="python")


def check_weights(ctx) -> None:
    """`--weights` loads into the backbone: read with torch, names and shapes compared with the template's
    module built on the CPU (the template's own loader decides, as it will at every build)."""
    if not ctx.weights:
        return
    path = Path(ctx.weights)
    if path.stat().st_size == 0:
        raise MbpatchError("--weights: the file is empty, not a torch checkpoint; nothing was changed",
                           file=str(path), step="weights")
    try:
        import torch  # noqa: F401 (the template needs it; only imported when --weights is given)
    except ImportError:
        return  # verification in --python will judge it
    namespace: Dict = {"__name__": f"mbpatch_template_{ctx.backbone.family}"}
    exec(compile(ctx.backbone.source(), str(ctx.backbone.template), "exec"), namespace)  # noqa: S102 (our template)
    try:
        state = namespace["_read_checkpoint"](path)
    except Exception as e:  # noqa: BLE001 (any unreadable file)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise MbpatchError(f"--weights is not a readable torch checkpoint ({type(e).__name__}: {first}); nothing was changed",
                           file=str(path), step="weights") from None
    module = namespace[ctx.backbone.cls]()
    try:
        namespace["load_timm_weights"](module, state)
    except (RuntimeError, TypeError) as e:
        lines = str(e).splitlines()
        detail = "; ".join(ln[:200] for ln in lines[1:]) or lines[0]
        raise MbpatchError(f"--weights does not fit {ctx.backbone.cls} ({detail}); nothing was changed",
                           file=str(path), step="weights") from None


MAX_NC = 10000  # more classes than any public dataset has; 10,000,000 made verify try 4 GB allocations


def check_inputs(co: Checkout, arch: str, nc: Optional[int], head: str, data: Optional[str]) -> None:
    """Options that would be accepted and then fail (or be silently ignored) later: refused before any write.
    `nc` None is the default: the stock yaml's own number of classes."""
    if nc is not None and nc < 1:
        raise MbpatchError("--nc must be at least 1", file=str(co.root), step="nc")
    if nc is not None and nc > MAX_NC:
        raise MbpatchError(f"--nc {nc} is more classes than mbpatch accepts ({MAX_NC}); nothing was changed",
                           file=str(co.root), step="nc")
    if head != "stock" and arch != "rtdetr":
        raise MbpatchError(f"--head {head} is an RT-DETR neck; --arch {arch} has no such option (leave --head out)",
                           file=str(co.root), step="head")
    if data and ("/" in data or "\\" in data or data.startswith(("~", "."))):  # a path, not a dataset name
        path = Path(data).expanduser()
        if not path.is_file():
            raise MbpatchError("--data: no such dataset yaml (pass an existing file, or a dataset name such as coco8.yaml)",
                               file=data, step="data")


def refuse_name_clash(co: Checkout, backbone, changes: Dict[str, bytes], originals: Dict[str, Optional[bytes]],
                      replace_existing: bool) -> None:
    """A name of the backbone (`MobileNetV2`) that a file apply edits already binds to the user's own class
    (defined there, or imported from elsewhere than mbpatch's AddModules/): apply would import mbpatch's over
    it, silently. Refused before any write unless --replace-existing says to use mbpatch's."""
    import ast

    if replace_existing:
        return
    names = set(backbone.names)
    # where the backbone's names may come from without shadowing anything: mbpatch's own source files (or a
    # tutorial's file of the same name, which the add_modules recipes keep and use)
    ours = ("AddModules", backbone.family, f"mbpatch_{backbone.family}")
    for rel, before in originals.items():
        if before is None or rel not in changes or not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(before)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            bound = []
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                bound = [node.name]
            elif isinstance(node, ast.ImportFrom) and not set((node.module or "").split(".")) & set(ours):
                bound = [a.asname or a.name for a in node.names]
            elif isinstance(node, ast.Import):
                bound = [a.asname or a.name.split(".")[0] for a in node.names]
            clash = [n for n in bound if n in names]
            if clash:
                raise MbpatchError(
                    f"already has its own {clash[0]} (line {node.lineno}); apply would import mbpatch's {clash[0]} over "
                    "it and your models would silently build mbpatch's; nothing was changed: rename yours, or pass "
                    "--replace-existing to use mbpatch's", file=rel, step="add_modules")
