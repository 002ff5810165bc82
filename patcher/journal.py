"""The journal in `<checkout>/.mbpatch/`: what each apply changed, so `revert` can give back the exact bytes.

Layout:
    .mbpatch/journal.json                 entries, oldest first (format below)
    .mbpatch/originals/<entry id>/<path>  the bytes each patched file had before that entry
    .mbpatch/edited-<time>/<path>         copies saved by `revert --force` (kept after revert)
    .mbpatch/kept-<time>/<path>           originals revert did not write back: the file was replaced by an
                                          upgrade or removed by `pip uninstall` (kept after revert)

Format 2 (mbpatch 0.x, this file) adds to each entry `version` and `kind`: the checkout's release when the
entry was written, so apply / doctor / revert can tell "upgraded since mbpatch patched it" from a hand edit.
Each file record has `sha_before` (its bytes before that entry) and `sha_after`; for a file written by
several entries, entry k's sha_before must equal entry k-1's sha_after (the chain): a gap means the file
was edited between the two applies. Format 1 journals (no `version`) are read and reverted the same way.

When the checkout is in a git repository, the first entry adds `/<path>/.mbpatch/` to `.git/info/exclude`
(never to a tracked .gitignore) so `git add -A` does not commit the saved originals.

An entry is written as "pending" (with its originals) before any file of the checkout is touched and marked
"done" after the last write, so a run killed at any point leaves a journal that explains the state: each
file of a pending entry is either still original (sha_before) or already patched (sha_after).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import MbpatchError, __version__

FORMAT = 2
KEEP_PREFIXES = ("edited-", "kept-")  # folders of .mbpatch/ that outlive the journal
DIR = ".mbpatch"
TMP_SUFFIX = ".mbpatch-tmp"  # atomic_write's temp file: `.<name>.mbpatch-tmp` beside the file


def sha256(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, keeping the file's permission bits.

    The temp file is created exclusively and never through a link (O_EXCL | O_NOFOLLOW): a leftover or
    planted `.<name>.mbpatch-tmp` (a killed run's, or a symlink) is removed first, never written through.
    """
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644 if mode is None else mode)
        created = True
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        _hook("before-rename", path)
        os.replace(tmp, path)
        created = False
    finally:
        if created:
            tmp.unlink(missing_ok=True)


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _hook(point: str, path: Path) -> None:
    """Test hook: MBPATCH_CRASH_AT="<point>:<n>" kills the process at the n-th time `point` is reached.

    Points: before-write / after-write (each file of the checkout), before-rename (every atomic write:
    checkout files, saved originals, the journal), journal / after-journal (each journal update).

    With a third field, "<point>:<n>:<ERRNO>" (e.g. `before-rename:5:ENOSPC`), the n-th time raises that
    OSError instead, as a full disk or a read-only file would; "<point>:<n>:SIGINT" (or SIGTERM) sends
    that signal to this process instead, as a Ctrl-C at that moment would. Point `lock` is reached when
    the lock file is written.
    """
    spec = os.environ.get("MBPATCH_CRASH_AT")
    if not spec:
        return
    want, _, rest = spec.partition(":")
    if want != point:
        return
    count, _, err = rest.partition(":")
    n = int(os.environ.get("_MBPATCH_CRASH_SEEN", "0")) + 1
    os.environ["_MBPATCH_CRASH_SEEN"] = str(n)
    if n == int(count or 1):
        if err.startswith("SIG"):
            os.kill(os.getpid(), getattr(signal, err))
            return
        if err:
            code = getattr(errno, err)
            raise OSError(code, os.strerror(code), str(path))
        os._exit(99)


class Journal:
    def __init__(self, root: Path):
        self.root = root
        self.dir = root / DIR
        self.file = self.dir / "journal.json"

    # --- reading -------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.file.is_file()

    def load(self) -> Dict:
        """The journal, checked as a schema before any of it is used (see `check`): a journal that fails is
        refused whole, exit 2, before anything is written."""
        if self.dir.is_symlink():
            raise untrusted(self.dir, f"{DIR} is a symbolic link (mbpatch never creates one)")
        if not self.file.is_file():
            return {"format": FORMAT, "mbpatch": __version__, "entries": []}
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise untrusted(self.file, f"corrupted: not valid JSON ({type(e).__name__})") from None
        if isinstance(data, dict) and _is_int(data.get("format")) and data["format"] > FORMAT:
            raise MbpatchError(
                f"the journal was written by a newer mbpatch ({data.get('mbpatch')}); upgrade mbpatch to revert it",
                file=str(self.file),
                step="journal",
            )
        problem = check(data, self.root)
        if problem:
            raise untrusted(self.file, problem)
        return data

    def entries(self) -> List[Dict]:
        return self.load()["entries"]

    def original(self, entry: Dict, rel: str) -> bytes:
        return (self.dir / "originals" / str(entry["id"]) / rel).read_bytes()

    def verified_original(self, entry: Dict, record: Dict) -> bytes:
        """The saved original of `record` (a file record of `entry`), refused unless its sha256 is the one
        recorded at apply: revert never writes back bytes it cannot vouch for."""
        rel = record["path"]
        where = f"{DIR}/originals/{entry['id']}/{rel}"
        try:
            data = self.original(entry, rel)
        except OSError:
            raise MbpatchError(
                f"its original copy is missing ({where}), so revert cannot restore it; nothing was reverted: restore "
                f"the checkout with git (`git checkout -- {rel}` and remove what mbpatch added), or move {DIR}/ away and "
                "run `mbpatch revert --from-markers`", file=rel, step="revert") from None
        if sha256(data) != record["sha_before"]:
            raise MbpatchError(
                f"its saved original {where} does not match the sha256 recorded at apply (damaged or replaced: "
                f"{len(data)} bytes); nothing was reverted: restore the checkout with git (`git checkout -- {rel}` and "
                f"remove what mbpatch added), or move {DIR}/ away and run `mbpatch revert --from-markers`",
                file=rel, step="revert")
        return data

    # --- writing -------------------------------------------------------------------------------------------
    def _save(self, data: Dict) -> None:
        self.dir.mkdir(exist_ok=True)
        data["format"] = FORMAT
        _hook("journal", self.file)
        atomic_write(self.file, (json.dumps(data, indent=1) + "\n").encode())
        _hook("after-journal", self.file)

    def begin(self, meta: Dict, files: Dict[str, Optional[bytes]], new: Dict[str, bytes], dirs: List[str]) -> Dict:
        """Record a pending entry with the originals of `files` (None = the file is new)."""
        data = self.load()
        entry_id = max([e["id"] for e in data["entries"]], default=0) + 1
        created = not self.dir.exists()
        if created:
            git_exclude(self.root)
        try:
            self._begin(data, entry_id, meta, files, new, dirs)
        except OSError:  # nothing of the checkout was touched yet: leave no trace either
            _rmtree(self.dir / "originals" / str(entry_id))
            if (self.dir / "originals").is_dir() and not any((self.dir / "originals").iterdir()):
                (self.dir / "originals").rmdir()
            if created:
                self.remove(keep_edited=True)
            raise
        return data["entries"][-1]

    def _begin(self, data: Dict, entry_id: int, meta: Dict, files: Dict[str, Optional[bytes]],
               new: Dict[str, bytes], dirs: List[str]) -> None:
        originals = self.dir / "originals"
        if originals.is_symlink():  # never written through: mbpatch creates no link
            originals.unlink()
        _rmtree(originals / str(entry_id))  # a leftover of a run killed before its entry was recorded
        for rel, before in files.items():
            if before is not None:
                dest = self.dir / "originals" / str(entry_id) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(dest, before)
        entry = dict(
            meta,
            id=entry_id,
            time=time.strftime("%Y-%m-%dT%H:%M:%S"),
            mbpatch=__version__,
            state="pending",
            dirs=dirs,
            files=[
                {"path": rel, "new": before is None, "sha_before": sha256(before), "sha_after": sha256(new[rel])}
                for rel, before in files.items()
            ],
        )
        data["entries"].append(entry)
        data["mbpatch"] = __version__
        self._save(data)

    def finish(self, entry: Dict) -> None:
        data = self.load()
        for e in data["entries"]:
            if e["id"] == entry["id"]:
                e["state"] = "done"
        self._save(data)

    def drop(self, entry: Dict) -> None:
        """Forget an entry whose writes were rolled back."""
        data = self.load()
        data["entries"] = [e for e in data["entries"] if e["id"] != entry["id"]]
        if data["entries"]:
            self._save(data)
        else:
            self.remove(keep_edited=True)
        _rmtree(self.dir / "originals" / str(entry["id"]))

    def remove(self, keep_edited: bool = True) -> None:
        """Delete the journal and originals; copies saved by `revert --force` stay.

        journal.json goes first: once it is gone nothing claims the originals, so a run killed half-way leaves
        only unreferenced leftovers (removed by the next `mbpatch revert`), never a journal whose originals
        are missing.
        """
        if not self.dir.exists() or self.dir.is_symlink():
            return
        if self.file.exists() or self.file.is_symlink():
            self.file.unlink()
        for child in sorted(self.dir.iterdir(), key=lambda c: c.name != "originals"):
            if keep_edited and child.name.startswith(KEEP_PREFIXES):
                continue
            _rmtree(child)
        if not any(self.dir.iterdir()):
            self.dir.rmdir()


# --- checking --------------------------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdef")
TOP_FIELDS = {"format": int, "mbpatch": str, "entries": list}
# an entry's fields and their types (None allowed where apply may record None); other fields are refused
ENTRY_FIELDS = {
    "id": int, "time": str, "mbpatch": str, "state": str, "dirs": list, "files": list, "backbone": str,
    "arch": str, "task": str, "nc": int, "scale": str, "head": str, "style": str, "weights": (str, type(None)),
    "recipes": dict, "kind": str, "version": (str, type(None)),
}
FILE_FIELDS = {"path": str, "new": bool, "sha_before": (str, type(None)), "sha_after": str}
STATES = ("pending", "done")


def untrusted(path: Path, why: str) -> MbpatchError:
    return MbpatchError(
        f"not a journal mbpatch can trust ({why}); nothing was changed: restore the checkout with git (or from "
        f"{DIR}/originals/ by hand), or move {DIR}/ away and run `mbpatch revert --from-markers`",
        file=str(path), step="journal")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_sha(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _HEX


def _typed(value, want) -> bool:
    kinds = want if isinstance(want, tuple) else (want,)
    if int in kinds and not _is_int(value):
        return isinstance(value, tuple(k for k in kinds if k is not int))
    return isinstance(value, kinds)


def confined(rel, root: Path) -> Optional[str]:
    """Why `rel` is not a path revert may write (None when it is): relative, normalised, inside the checkout,
    not mbpatch's own files, and through no symbolic link to a folder."""
    if not isinstance(rel, str) or not rel:
        return "a path that is not a non-empty string"
    if "\x00" in rel or "\\" in rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return f"an absolute or foreign path {rel!r}"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"a path that is not normalised or leaves the checkout {rel!r}"
    if parts[0] in (DIR, ".mbpatch.lock", ".git"):
        return f"a path inside mbpatch's or git's own files {rel!r}"
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            return f"a path through the symbolic link {folder.relative_to(root).as_posix()!r}"
    return None


def check(data, root: Path) -> Optional[str]:
    """What is wrong with a loaded journal (None: nothing). Every field revert uses, with its type; paths
    confined to the checkout (`confined`); ids unique; hashes 64 hex digits; format known."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, value in data.items():
        if key not in TOP_FIELDS:
            return f"unknown field {key!r}"
        if not _typed(value, TOP_FIELDS[key]):
            return f"field {key!r} has the wrong type"
    if "entries" not in data:
        return "no entries"
    if data.get("format", 1) not in (1, FORMAT):
        return f"unknown format {data.get('format')!r}"
    ids = set()
    for n, e in enumerate(data["entries"]):
        where = f"entry {n + 1}"
        if not isinstance(e, dict):
            return f"{where} is not an object"
        for key in ("id", "state", "files"):
            if key not in e:
                return f"{where} has no {key!r}"
        for key, value in e.items():
            if key not in ENTRY_FIELDS:
                return f"{where}: unknown field {key!r}"
            if not _typed(value, ENTRY_FIELDS[key]):
                return f"{where}: field {key!r} has the wrong type"
        if e["id"] < 1 or e["id"] in ids:
            return f"{where}: id {e['id']} is not a new positive number"
        ids.add(e["id"])
        if e["state"] not in STATES:
            return f"{where}: unknown state {e['state']!r}"
        for d in e.get("dirs", []):
            why = confined(d, root)
            if why:
                return f"{where}: dirs holds {why}"
        seen = set()
        for f in e["files"]:
            if not isinstance(f, dict) or set(f) != set(FILE_FIELDS):
                return f"{where}: a file record without exactly the fields {', '.join(FILE_FIELDS)}"
            for key, want in FILE_FIELDS.items():
                if not _typed(f[key], want):
                    return f"{where}: field {key!r} of a file has the wrong type"
            why = confined(f["path"], root)
            if why:
                return f"{where}: {why}"
            if f["path"] in seen:
                return f"{where}: {f['path']!r} is recorded twice"
            seen.add(f["path"])
            if not _is_sha(f["sha_after"]) or (f["new"] != (f["sha_before"] is None)) or \
                    (f["sha_before"] is not None and not _is_sha(f["sha_before"])):
                return f"{where}: the sha256 of {f['path']!r} is not 64 hex digits (or does not fit 'new')"
    return None


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _rmtree(child)
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()


def _git_dir(root: Path) -> Optional[Path]:
    """The git directory of the repository holding `root` (following a worktree's `.git` file), or None."""
    for folder in (root, *root.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                gd = Path(text[len("gitdir:"):].strip())
                gd = gd if gd.is_absolute() else folder / gd
                common = gd / "commondir"  # a worktree shares info/exclude with the main repository
                if common.is_file():
                    c = Path(common.read_text(encoding="utf-8").strip())
                    gd = c if c.is_absolute() else gd / c
                return gd
            return None
    return None


def exclude_line(root: Path) -> Optional[Tuple[Path, str]]:
    """(the repository's info/exclude file, the line that hides `root`/.mbpatch/), or None outside git."""
    gd = _git_dir(root.resolve())
    if gd is None:
        return None
    top = next(f for f in (root.resolve(), *root.resolve().parents) if (f / ".git").exists())
    rel = root.resolve().relative_to(top).as_posix()
    return gd / "info" / "exclude", "/" + (f"{rel}/" if rel != "." else "") + f"{DIR}/"


def git_exclude(root: Path) -> None:
    """List .mbpatch/ in .git/info/exclude (best effort: a read-only .git only means git shows the folder)."""
    try:
        found = exclude_line(root)
        if found is None:
            return
        path, line = found
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if line in text.splitlines():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        sep = "" if not text or text.endswith("\n") else "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{sep}{_EXCLUDE_NOTE}\n{line}\n")
    except (OSError, ValueError):
        pass


_EXCLUDE_NOTE = "# mbpatch: its journal and saved originals (never commit them)"
