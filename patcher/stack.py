"""The journal as a stack of applies (quilt's series): `mbpatch log`, `mbpatch revert --last`, the apply
command that brings one back, and the applies `verify` builds.

Built on the journal (`journal.py`) and engine's revert (`engine.revert`): popping the newest apply restores
each file it touched to the bytes it had before that apply (its saved original, or no file for one it created),
with the same checks as a full revert: a file changed since that apply wrote it is refused without --force
(and saved under .mbpatch/edited-<time>/ with it).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List, Optional

from . import MbpatchError
from .engine import RevertPlan, recorded_version
from .journal import Journal, sha256

# apply's options with their defaults: a command names only those that differ
_DEFAULTS = (("task", "detect"), ("scale", "n"), ("head", "stock"), ("style", "backbone"), ("nc", 80))


def apply_command(root: Path, entry: Dict) -> str:
    """The `mbpatch apply` command that writes `entry` again, runnable as printed (--repo and --arch included)."""
    parts = ["mbpatch", "apply", "--repo", str(root), "--backbone", str(entry.get("backbone")),
             "--arch", str(entry.get("arch"))]
    for key, default in _DEFAULTS:
        value = entry.get(key)
        if value is not None and str(value) != str(default):
            parts += [f"--{key}", str(value)]
    if entry.get("weights"):
        parts += ["--weights", str(entry["weights"])]
    return " ".join(shlex.quote(p) for p in parts)


def rows(entries: List[Dict]) -> List[Dict]:
    """One row per apply, oldest first: what `mbpatch log` shows."""
    out = []
    for e in entries:
        out.append(dict(id=e.get("id"), time=e.get("time"), family=e.get("arch"), task=e.get("task", "detect"),
                        scale=e.get("scale", "n"), backbone=e.get("backbone"), state=e.get("state"),
                        files=[f["path"] for f in e.get("files", [])]))
    return out


def plan_last(root: Path, version: Optional[str] = None) -> RevertPlan:
    """What `revert --last` would do: the newest entry's files back to the bytes they had before it."""
    journal = Journal(root)
    entries = journal.entries()
    if not entries:
        raise MbpatchError("the journal lists no apply: nothing to revert", file=str(journal.file), step="revert")
    last = entries[-1]
    was = recorded_version(entries)
    if version and was and version != was:
        raise MbpatchError(
            f"this checkout was upgraded from {was} to {version} since mbpatch patched it: --last cannot give back "
            f"{was}'s files; `mbpatch revert --repo {shlex.quote(str(root))}` undoes every apply", file=str(root),
            step="revert")
    rp = RevertPlan(entries=1, dirs=list(last.get("dirs", [])))
    for f in last["files"]:
        rel = f["path"]
        try:
            original = None if f["new"] else journal.original(last, rel)
        except OSError:
            raise MbpatchError(
                f"its original copy is missing from {journal.dir.name}/originals/{last['id']}/, so revert cannot "
                "restore it; restore the file with git (or reinstall), then delete .mbpatch/",
                file=rel, step="revert") from None
        rp.restore[rel] = original
        accept = {f["sha_after"]}
        if last.get("state") != "done":  # killed mid-apply: the file may not have been written yet
            accept.add(f["sha_before"])
        path = root / rel
        current = sha256(path.read_bytes()) if path.is_file() else None
        if current == sha256(original):
            rp.already.append(rel)
        elif current not in accept:
            rp.edited.append(rel)
    return rp


def last_entry(root: Path) -> Dict:
    return Journal(root).entries()[-1]


def live_applies(entries: List[Dict]) -> List[Dict]:
    """The applies `verify` builds: one per model yaml (a later apply of the same backbone, arch, task and scale
    writes the same yaml), newest last."""
    seen: Dict[tuple, Dict] = {}
    for e in entries:
        key = (e.get("backbone"), e.get("arch"), e.get("task", "detect"), e.get("scale", "n"), e.get("head", "stock"),
               e.get("style", "backbone"))
        seen.pop(key, None)
        seen[key] = e
    return list(seen.values())


def bring_back(root: Path, reverted: List[Dict], found: List[Path]) -> List[str]:
    """The apply commands that make the checkpoints `found` (each pickles a module revert deletes) load again:
    for each reverted apply, its command when one of them pickles that apply's backbone class."""
    import re

    from . import checkpoints
    from .templates import lookup

    pickles = [checkpoints.pickled(p) for p in found]
    out: List[str] = []
    for e in reverted:
        bb = lookup(str(e.get("backbone")))
        if bb is None:
            continue
        cls = re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(bb.cls.encode()) + rb"(?![A-Za-z0-9_])")
        if any(cls.search(data) for data in pickles):
            command = apply_command(root, e)
            if command not in out:
                out.append(command)
    return out

def _row(e: Dict, **more) -> Dict:
    return dict(id=e.get("id"), backbone=e.get("backbone"), arch=e.get("arch"), task=e.get("task", "detect"),
                scale=e.get("scale", "n"), **more)


def _verified_row(e: Dict, sub: Dict) -> Dict:
    v = sub.get("verification") or {}
    return _row(e, ok=bool(v.get("ok")), model_yaml=sub.get("model_yaml"), error=v.get("error"),
                params=(v.get("patched") or {}).get("params"), stock_params=(v.get("stock") or {}).get("params"),
                wall_s=v.get("wall_s"))


def verify_earlier(co, entries: List[Dict], verify_one, make_context, doc: Dict, as_json: bool) -> int:
    """`verify` after stacked applies: build every live apply but the newest (the caller builds that one), one row
    each in doc["applies"]; applies whose yaml a later apply rewrote, or that cannot be built here, go to
    doc["skipped"] with the reason. `verify_one(ctx, doc)` is cli.do_verify without its report."""
    from . import report

    live = live_applies(entries)
    live_ids = {e.get("id") for e in live}
    later = {}
    for e in entries:
        later[(e.get("backbone"), e.get("arch"), e.get("task", "detect"), e.get("scale", "n"))] = e.get("id")
    skipped = [_row(e, reason=f"apply {later[(e.get('backbone'), e.get('arch'), e.get('task', 'detect'), e.get('scale', 'n'))]}"
                              " wrote the same model yaml again (verified there)")
               for e in entries if e.get("id") not in live_ids]
    rows: List[Dict] = []
    code = 0
    for n, e in enumerate(live[:-1], 1):
        try:
            ctx = make_context(co, str(e.get("backbone")), str(e.get("arch")), int(e.get("nc", 80)), e.get("scale", "n"),
                               e.get("head", "stock"), False, e.get("style", "backbone"), task=e.get("task", "detect"))
        except MbpatchError as err:
            skipped.append(_row(e, reason=f"cannot be built by this checkout: {err}"))
            continue
        if not as_json:
            report.err.print(f"verifying apply {e.get('id')} ({n} of {len(live)}): {e.get('backbone')} / {e.get('arch')}"
                             f" {e.get('task', 'detect')}", highlight=False)
        sub: Dict = {}
        code = verify_one(ctx, sub) or code
        rows.append(_verified_row(e, sub))
    doc["applies"], doc["skipped"] = rows, skipped
    newest = live[-1]
    if not as_json:
        report.err.print(f"verifying apply {newest.get('id')} ({len(live)} of {len(live)}): {newest.get('backbone')} / "
                         f"{newest.get('arch')} {newest.get('task', 'detect')}", highlight=False)
    return code


def add_newest(doc: Dict, newest: Dict, as_json: bool) -> None:
    """The newest apply's row (the caller verified it into `doc`), then the table of every row."""
    from . import report

    doc["applies"].append(_verified_row(newest, doc))
    if not as_json:
        report.applies_verified(doc["applies"], doc["skipped"])
