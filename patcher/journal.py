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
    """Write via a temp file in the same folder and rename, keeping the file's permission bits."""
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        _hook("before-rename", path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        if not self.file.is_file():
            return {"format": FORMAT, "mbpatch": __version__, "entries": []}
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            assert isinstance(data, dict) and isinstance(data.get("entries"), list)
        except (ValueError, AssertionError):
            raise MbpatchError(
                "the mbpatch journal is corrupted; restore the files with git (or from .mbpatch/originals/) "
                "and delete .mbpatch/",
                file=str(self.file),
                step="journal",
            ) from None
        if int(data.get("format", 0)) > FORMAT:
            raise MbpatchError(
                f"the journal was written by a newer mbpatch ({data.get('mbpatch')}); upgrade mbpatch to revert it",
                file=str(self.file),
                step="journal",
            )
        return data

    def entries(self) -> List[Dict]:
        return self.load()["entries"]

    def original(self, entry: Dict, rel: str) -> bytes:
        return (self.dir / "originals" / str(entry["id"]) / rel).read_bytes()

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
        """Delete the journal and originals; copies saved by `revert --force` stay."""
        if not self.dir.exists():
            return
        for child in self.dir.iterdir():
            if keep_edited and child.name.startswith(KEEP_PREFIXES):
                continue
            _rmtree(child)
        if not any(self.dir.iterdir()):
            self.dir.rmdir()


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
