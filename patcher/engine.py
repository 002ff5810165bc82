"""Plan, write and revert: the only module that touches the checkout's files.

Apply = run every recipe in memory (each sees the texts the previous ones produced), check that every
changed Python file compiles, then write: originals to the journal first, each file atomically, all or
none (a failed write rolls back the ones already written).

The write phases of apply and revert defer SIGINT / SIGTERM (`deferred_signals`): a Ctrl-C there takes
effect when the phase ends, as `Interrupted`, so a checkout is never left half-patched by a keypress.
"""

from __future__ import annotations

import difflib
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

from . import MbpatchError, stop
from .checkout import Checkout
from .journal import NOFOLLOW, TMP_SUFFIX, Journal, _hook, atomic_write, sha256
from .recipes import Context, Recipe, RecipeError, Sources


@dataclass
class Step:
    recipe: str
    step: str
    status: str
    detail: str
    files: List[str]


@dataclass
class Plan:
    checkout: Checkout
    steps: List[Step]
    originals: Dict[str, Optional[bytes]]  # every file read, as it was (None = absent)
    texts: Dict[str, Optional[str]]  # every file read, as it will be

    @property
    def changes(self) -> Dict[str, bytes]:
        out = {}
        for rel, text in self.texts.items():
            if text is None:
                continue
            data = text.encode("utf-8")
            if data != self.originals.get(rel):
                out[rel] = data
        return out

    def diff(self) -> str:
        chunks = []
        for rel, data in self.changes.items():
            before = (self.originals.get(rel) or b"").decode("utf-8").splitlines(keepends=True)
            after = data.decode("utf-8").splitlines(keepends=True)
            src = "/dev/null" if self.originals.get(rel) is None else f"a/{rel}"
            chunks.append("".join(difflib.unified_diff(before, after, src, f"b/{rel}")))
        return "".join(chunks)


def _inside(co: Checkout, rel: str, step: str = "plan") -> Path:
    """The absolute path of `rel`, refusing anything that would leave the checkout or pass through a symbolic
    link: a linked file or folder is refused up front, never patched through (revert could not give it back
    as the link it was)."""
    here = co.root
    for part in Path(rel).parts:
        here = here / part
        if here.is_symlink():
            raise MbpatchError(
                f"{'is' if here == co.root / rel else 'lies under'} a symbolic link ({here.relative_to(co.root).as_posix()} -> "
                f"{os.readlink(here)}); mbpatch does not patch through links and nothing was changed: replace the link "
                "with a copy of what it points to, then apply again", file=rel, step=step)
    path = (co.root / rel).resolve()
    root = co.root.resolve()
    if root != path and root not in path.parents:
        raise MbpatchError("refusing to write outside the checkout", file=rel, step=step)
    return co.root / rel


def _blame(e: RecipeError, targets: List[str], default: str) -> str:
    """The file a recipe's refusal is about: its own `file` if it says, else the target its message names."""
    named = getattr(e, "file", None) or [t for t in sorted(targets, key=len, reverse=True) if t in str(e)]
    if isinstance(named, str):
        return named
    return named[0] if named else (targets[0] if targets else default)


def plan(ctx: Context, recipes: List[Recipe]) -> Plan:
    co: Checkout = ctx.checkout
    originals: Dict[str, Optional[bytes]] = {}
    texts = Sources()
    steps: List[Step] = []
    for recipe in recipes:
        try:
            targets = recipe.targets(ctx)
        except RecipeError as e:
            raise MbpatchError(str(e), file=co.files.get("tasks") or str(co.root), step=recipe.name) from None
        for rel in targets:
            if rel in texts:
                continue
            path = _inside(co, rel, recipe.name)
            data = path.read_bytes() if path.is_file() else None
            originals[rel] = data
            try:
                texts.set_text(rel, None if data is None else data.decode("utf-8"))
            except UnicodeDecodeError:
                raise MbpatchError("is not UTF-8 text; cannot patch it", file=rel, step=recipe.name) from None
        try:
            outcome = recipe.run(ctx, texts)
        except RecipeError as e:
            raise MbpatchError(str(e), file=_blame(e, targets, str(co.root)), step=recipe.name) from None
        for rel, text in outcome.texts.items():
            _inside(co, rel, recipe.name)
            texts.set_text(rel, text)
        for rel, module in outcome.modules.items():
            _inside(co, rel, recipe.name)
            texts.set_module(rel, module)
        steps.append(Step(recipe.name, recipe.step, outcome.status, outcome.detail, sorted({**outcome.texts, **outcome.modules})))
    result = Plan(co, steps, originals, dict(texts.items()))
    for rel, data in result.changes.items():
        if rel.endswith(".py"):
            try:
                compile(data, rel, "exec")
            except SyntaxError as e:  # a recipe bug, never the user's: say so
                raise MbpatchError(f"mbpatch produced invalid Python (line {e.lineno}); nothing was written, please report it",
                                   file=rel, step="compile") from None
    for rel in result.changes:
        if result.originals.get(rel) is None:
            _case_clash(co, rel, _step_for(result, rel))
    return result


def _case_clash(co: Checkout, rel: str, step: str) -> None:
    """Refuse to create `rel` beside a file whose name differs only in case (one file on macOS and Windows)."""
    path = co.root / rel
    if not path.parent.is_dir():
        return
    for sibling in path.parent.iterdir():
        if sibling.name != path.name and sibling.name.lower() == path.name.lower():
            raise MbpatchError(
                f"would be created beside your {sibling.name}: the two names differ only in case and are the same "
                "file on macOS and Windows; rename or remove yours, then apply again", file=rel, step=step)


# --- locking -----------------------------------------------------------------------------------------------


LOCK_NAME = ".mbpatch.lock"


class Lock:
    """One mbpatch run per checkout at a time.

    `<root>/.mbpatch.lock` holds the pid of the run that has it and an exclusive `flock`, which the kernel
    drops when that process ends in any way (a killed run leaves only an unlocked file, taken over by the
    next run). A second run waits up to `wait` seconds (default 5, env MBPATCH_LOCK_WAIT), then refuses.
    """

    def __init__(self, root: Path, wait: Optional[float] = None):
        self.path = root / LOCK_NAME
        self.wait = float(os.environ.get("MBPATCH_LOCK_WAIT", "5")) if wait is None else wait
        self._fd: Optional[int] = None

    def __enter__(self):
        deadline = time.monotonic() + self.wait
        while True:
            # a signal is held while the lock is taken (never a lock file left by a Ctrl-C in between) and
            # raised once it is released again; the wait between tries stays interruptible
            with stop.held() as sig:
                taken = self._try()
            if sig.got:
                if taken is self:
                    self.__exit__()
                sig.reraise()
            if taken is self:
                return self
            if taken == "busy":
                if time.monotonic() > deadline:
                    raise self._busy()
                time.sleep(0.1)

    def _try(self):
        """One attempt: self (taken), "busy" (another run holds it) or "again" (retry at once)."""
        try:  # never through a link: a planted `.mbpatch.lock -> elsewhere` is removed, not written through
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)
        except OSError as e:
            if self.path.is_symlink():
                self.path.unlink()
                return "again"
            raise MbpatchError(f"cannot create the lock file ({e.strerror}): is the checkout writable?",
                               file=str(self.path), step="lock") from None
        if fcntl is None:  # no flock on this platform: the file alone is the lock (see _excl)
            os.close(fd)
            return self._excl(time.monotonic() + self.wait)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return "busy"
        try:  # the holder unlinks the file before it lets go: make sure we locked the current one
            same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return "again"
        try:
            os.ftruncate(fd, 0)
            _hook("lock", self.path)
            os.write(fd, str(os.getpid()).encode())
        except OSError as e:  # a full disk, a quota: leave no empty lock behind
            try:
                self.path.unlink()
            except OSError:
                pass
            os.close(fd)
            raise MbpatchError(f"cannot write the lock file ({e.strerror}); nothing was changed ({_what_to_do(e)}, "
                               "then run the command again)", file=str(self.path), step="lock") from None
        self._fd = fd
        return self

    def _busy(self) -> MbpatchError:
        pid = holder(self.path.parent)
        who = f"mbpatch run (pid {pid})" if pid else "mbpatch run"
        return MbpatchError(
            f"another {who} is working on this checkout; wait for it to finish, then run this command again",
            file=str(self.path), step="lock",
        )

    def _excl(self, deadline: float):
        while True:
            try:
                pid = int(self.path.read_text() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid in (0, os.getpid()) or not _alive(pid):
                self.path.write_text(str(os.getpid()))
                return self
            if time.monotonic() > deadline:
                raise self._busy()
            time.sleep(0.1)

    def __exit__(self, *exc):
        with stop.held() as sig:  # unlink and close are never split by a signal (no lock file left behind)
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None
        if not (exc and exc[0] is not None):  # when already unwinding, that exception is the one reported
            sig.reraise()
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(root: Path) -> Optional[int]:
    """The pid of the mbpatch run holding the checkout's lock, or None when nobody holds it.

    Only looks: a lock file nobody holds (left by a killed run) is reported as None and left in place.
    """
    path = root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
        pid = int(text) if text.isdigit() else 0
        if fcntl is None:
            return pid if pid and _alive(pid) else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return pid or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# --- writing -----------------------------------------------------------------------------------------------


def _new_dirs(co: Checkout, rels: List[str]) -> List[str]:
    """Folders that writing `rels` will create, outermost first."""
    out: List[str] = []
    for rel in rels:
        parent = (co.root / rel).parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            r = co.rel(d) if d.exists() else d.relative_to(co.root).as_posix()
            if r not in out:
                out.append(r)
    return out


def write(p: Plan, meta: Dict) -> Optional[Dict]:
    """Write the plan's changes all-or-none, journalled. Returns the journal entry (None if nothing changed)."""
    co = p.checkout
    changes = p.changes
    if not changes:
        return None
    for rel in changes:
        path = co.root / rel
        target = path if path.exists() else path.parent
        while not target.exists():
            target = target.parent
        if not os.access(target, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise MbpatchError("is not writable; nothing was changed (make it writable and apply again)",
                               file=rel, step=_step_for(p, rel))
    with deferred_signals():
        return _write(p, meta, changes)


def _write(p: Plan, meta: Dict, changes: Dict[str, bytes]) -> Dict:
    co = p.checkout
    journal = Journal(co.root)
    dirs = _new_dirs(co, list(changes))
    try:
        entry = journal.begin(meta, {rel: p.originals.get(rel) for rel in changes}, changes, dirs)
    except OSError as e:
        raise MbpatchError(f"cannot write the journal ({e.strerror}); nothing was changed ({_what_to_do(e)})",
                           file=str(journal.file), step="journal") from None
    written: List[str] = []
    current = ""
    try:
        for d in dirs:
            current = d
            (co.root / d).mkdir()
        for rel, data in changes.items():
            current = rel
            _hook("before-write", co.root / rel)
            atomic_write(co.root / rel, data)
            written.append(rel)
            _hook("after-write", co.root / rel)
        current = str(journal.file)
        journal.finish(entry)
    except OSError as e:
        if current == str(journal.file):  # every file is written; only the "done" mark is missing
            raise MbpatchError(
                f"every file was written but the journal could not be updated ({e.strerror}); "
                "`mbpatch revert` still restores the originals", file=current, step="journal") from None
        failed = _rollback(co, p, written, dirs)
        step = _step_for(p, current)
        if failed:
            raise MbpatchError(
                f"could not write it ({e.strerror}), and restoring {', '.join(failed)} failed too; the journal "
                f"keeps every original: {_what_to_do(e)}, then run `mbpatch revert`", file=current, step=step,
            ) from None
        try:
            journal.drop(entry)
        except OSError:
            pass  # the pending entry stays; its files are all original again, `mbpatch revert` clears it
        raise MbpatchError(f"could not write it ({e.strerror}); every change was rolled back ({_what_to_do(e)}, "
                           "then apply again)", file=current, step=step) from None
    return entry


def _what_to_do(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the file and its folder writable"
    return "fix the cause"


def _step_for(p: Plan, rel: str) -> str:
    for s in p.steps:
        if rel in s.files:
            return s.recipe
    return "write"


def _rollback(co: Checkout, p: Plan, written: List[str], dirs: List[str]) -> List[str]:
    """Put back the files already written; returns the ones that could not be restored."""
    failed = []
    for rel in written:
        before = p.originals.get(rel)
        try:
            if before is None:
                (co.root / rel).unlink(missing_ok=True)
            else:
                atomic_write(co.root / rel, before)
        except OSError:
            failed.append(rel)
    for d in reversed(dirs):
        try:
            (co.root / d).rmdir()
        except OSError:
            pass
    return failed


# --- signals -----------------------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """A SIGINT / SIGTERM that arrived during a write phase, raised once the phase is complete."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class deferred_signals:  # noqa: N801 (used as a context manager)
    """Hold SIGINT and SIGTERM until the block ends, then raise `Interrupted` (unless the block failed)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.got: List[int] = []
        self.old: Dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.got.append(signum)

    def __exit__(self, exc_type, exc, tb):
        for sig, handler in self.old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        if self.got and exc_type is None:
            raise Interrupted(self.got[0])
        return False


# --- revert ------------------------------------------------------------------------------------------------


@dataclass
class RevertPlan:
    restore: Dict[str, Optional[bytes]] = field(default_factory=dict)  # path -> original bytes (None: delete)
    edited: List[str] = field(default_factory=list)  # changed since mbpatch wrote them
    already: List[str] = field(default_factory=list)  # already back to their original bytes
    dirs: List[str] = field(default_factory=list)
    entries: int = 0
    # (entry id, path): the file was edited between the apply before that entry and that entry; the edited
    # bytes are that entry's saved original (.mbpatch/originals/<id>/<path>)
    between: List[Tuple[int, str]] = field(default_factory=list)
    # originals that revert leaves unwritten because the file was replaced by an upgrade or removed with the
    # package (path -> those original bytes, saved under .mbpatch/kept-<time>/)
    kept: Dict[str, bytes] = field(default_factory=dict)
    upgraded: Optional[Tuple[str, str]] = None  # (version the journal recorded, version on disk now)
    gone: bool = False  # the package itself is gone (pip uninstall): only mbpatch's leftovers are undone
    # (file left as it is now, file of mbpatch's revert would delete that it still imports): reverting would
    # leave a checkout that cannot import, so revert refuses
    still_imported: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def blocked(self) -> List[str]:
        """Files whose revert needs --force: edited after the last apply, or between two applies."""
        return self.edited + [rel for _, rel in self.between if rel not in self.edited]


def recorded_version(entries: List[Dict]) -> Optional[str]:
    """The checkout version the last entry recorded (None for a format-1 journal)."""
    for e in reversed(entries):
        if e.get("version"):
            return str(e["version"])
    return None


def plan_revert(root: Path, version: Optional[str] = None, gone: bool = False) -> RevertPlan:
    """What revert would do. `version`: the checkout's version now (None: unknown, not compared);
    `gone`: no checkout is detected at `root` any more (the package was uninstalled)."""
    journal = Journal(root)
    entries = journal.entries()
    rp = RevertPlan(entries=len(entries), gone=gone)
    was = recorded_version(entries)
    if version and was and version != was:
        rp.upgraded = (was, version)
    ok: Dict[str, set] = {}  # path -> acceptable current sha256 values
    for e in entries:
        for f in e["files"]:
            rel = f["path"]
            if rel not in rp.restore:
                # every original is read and checked against its recorded sha256 before any byte is written
                rp.restore[rel] = None if f["new"] else journal.verified_original(e, f)
            elif f["sha_before"] not in ok[rel]:  # the chain is broken: edited between the two applies
                rp.between.append((int(e["id"]), rel))
            accept = {f["sha_after"]}
            if e["state"] != "done":  # killed mid-apply: the file may not have been written yet
                accept |= ok.get(rel, {f["sha_before"]})
            ok[rel] = accept
        for d in e.get("dirs", []):
            if d not in rp.dirs:
                rp.dirs.append(d)
    for rel, accept in ok.items():
        path = root / rel
        current = sha256(path.read_bytes()) if path.is_file() else None
        original = rp.restore[rel]
        if current == sha256(original):  # already original again (a revert killed half-way): not an edit
            rp.already.append(rel)
        elif current not in accept:
            if (rp.upgraded or gone) and original is not None:
                rp.kept[rel] = original  # the upgrade (or pip) wrote this file: never put the old bytes back
            else:
                rp.edited.append(rel)
    deleted = [rel for rel, data in rp.restore.items() if data is None and rel.endswith(".py")]
    for rel in rp.kept:
        path = root / rel
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        rp.still_imported += [(rel, d) for d in deleted if _imports(text, d)]
    return rp


def _imports(text: str, rel: str) -> bool:
    """Whether Python source `text` names the module at `rel` (`pkg/AddModules/x.py` as `AddModules.x`, or
    the package `pkg/AddModules/__init__.py` as `AddModules`) in an import statement."""
    parts = rel[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts:
        return False
    name = parts[-1] if len(parts) < 2 else ".".join(parts[-2:])
    for line in text.splitlines():
        words = line.split("#")[0].strip()
        if words.startswith(("import ", "from ")) and (f"{name} " in f"{words} " or f".{parts[-1]} " in f"{words} "
                                                         or f" {parts[-1]} " in f"{words} " or f"{name}." in words):
            return True
    return False


def _stamp_dir(root: Path, prefix: str) -> Path:
    base = root / ".mbpatch" / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


@dataclass
class RevertResult:
    saved: Optional[Path] = None  # your edited copies (revert --force)
    kept: Optional[Path] = None  # originals not written back (upgrade / uninstall)
    restored: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)  # files left as they are now (see RevertPlan.kept)


def revert(root: Path, rp: RevertPlan, force: bool = False, drop: Optional[Dict] = None) -> RevertResult:
    """Restore the originals. With `force`, edited files are first copied to .mbpatch/edited-<time>/
    (and the versions edited between two applies to .mbpatch/edited-<time>/before-apply-<id>/).
    `drop`: the one journal entry `rp` undoes (`revert --last`, stack.plan_last): only it leaves the journal."""
    res = RevertResult()
    if rp.blocked and not force:
        between = sorted({rel for _, rel in rp.between})
        parts = []
        if rp.edited:
            parts.append("changed since mbpatch patched them: " + ", ".join(rp.edited))
        if between:
            parts.append("edited between two applies (your edit is under .mbpatch/originals/): " + ", ".join(between))
        raise MbpatchError(
            "; ".join(parts) + "; revert refused (use --force to save your copies under .mbpatch/ and revert anyway)",
            file=rp.blocked[0], step="revert")
    if rp.still_imported and not (rp.upgraded and force):
        kept, module = rp.still_imported[0]
        raise MbpatchError(
            f"is kept as it is now (replaced by an upgrade or a merge), but it still imports {module}, which revert "
            "would delete: the checkout could not import; nothing was reverted: restore it to the release's version "
            f"(`git checkout -- {kept}`), then run `mbpatch revert` again", file=kept, step="revert")
    if rp.upgraded and force:  # --force: the old release's files go back too (the current ones are saved)
        rp.edited += [rel for rel in rp.kept if rel not in rp.edited]
        rp.kept = {}
    writes = {rel: data for rel, data in rp.restore.items() if rel not in rp.kept}
    for rel in writes:
        _writable_or_refuse(root, rel)
    journal = Journal(root)
    current = ""
    try:
        with deferred_signals():
            if rp.edited or rp.between:
                res.saved = _stamp_dir(root, "edited")
                for rel in rp.edited:
                    src = root / rel
                    if src.is_file():
                        current = str(res.saved / rel)
                        _save_copy(res.saved / rel, src.read_bytes())
                for eid, rel in rp.between:
                    copy = journal.dir / "originals" / str(eid) / rel
                    if copy.is_file():
                        current = str(res.saved / f"before-apply-{eid}" / rel)
                        _save_copy(res.saved / f"before-apply-{eid}" / rel, copy.read_bytes())
            if rp.kept:
                res.kept = _stamp_dir(root, "kept")
                for rel, data in rp.kept.items():
                    current = str(res.kept / rel)
                    _save_copy(res.kept / rel, data)
                    res.left.append(rel)
            for rel, data in writes.items():
                current = rel
                path = root / rel
                path.with_name(f".{path.name}{TMP_SUFFIX}").unlink(missing_ok=True)  # left by a killed apply
                _hook("before-write", path)
                if data is None:
                    path.unlink(missing_ok=True)
                    for cache in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):
                        cache.unlink()
                else:
                    atomic_write(path, data)
                res.restored.append(rel)
                _hook("after-write", path)
            _remove_dirs(root, rp.dirs)
            current = str(journal.file)
            if drop is not None:
                journal.drop(drop)
            else:
                journal.remove(keep_edited=True)
    except OSError as e:
        done = len(res.restored)
        raise MbpatchError(
            f"revert stopped ({e.strerror}) after restoring {done} of {len(writes)} file(s); the journal keeps "
            f"every original: {_what_to_do(e)}, then run `mbpatch revert` again to finish",
            file=current or str(root), step="revert") from None
    return res


def _writable_or_refuse(root: Path, rel: str) -> None:
    path = root / rel
    target = path if path.exists() else path.parent
    while not target.exists():
        target = target.parent
    if not os.access(target, os.W_OK) or not os.access(path.parent if path.parent.exists() else target, os.W_OK):
        raise MbpatchError("is not writable; nothing was reverted (make it and its folder writable, then revert again)",
                           file=rel, step="revert")


def _save_copy(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, data)


def _remove_dirs(root: Path, dirs: List[str]) -> None:
    for d in sorted(dirs, key=len, reverse=True):
        folder = root / d
        pycache = folder / "__pycache__"
        if pycache.is_dir() and not any(p.suffix != ".pyc" for p in pycache.iterdir()):
            for p in pycache.iterdir():
                p.unlink()
            pycache.rmdir()
        try:
            folder.rmdir()
        except OSError:
            pass
