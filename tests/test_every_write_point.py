"""Every filesystem mutation of apply, stacked apply and revert, crashed at in turn (README "Safety").

The mutations are found by wrapping the os calls in a forked child running the real `mbpatch` command
(os.open for writing, open()/io.open for writing, os.write / os.ftruncate on those descriptors, os.replace,
os.rename, os.unlink, os.remove, os.rmdir, os.mkdir, os.chmod, os.symlink, os.truncate), never by hooks placed
in mbpatch by hand. A first run of each scenario counts them; then, for k = 1..N, a fresh child is killed
with os._exit just before its k-th mutation (the state a kill -9 or a power cut leaves), and the next
`mbpatch revert` (for a crashed revert: the next one) must give back the checkout's exact tree, no stray file
or folder, the lock gone, without --force. The checkout is a real Ultralytics 8.4.190 one.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import unpacked

V = "8.4.190"
CRASHED = 99
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _tree(root: Path) -> Tuple[Dict[str, bytes], List[str]]:
    """(every file's bytes, every folder): the whole checkout, mbpatch's own files included."""
    files, dirs = {}, []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for d in dirnames:
            dirs.append(os.path.relpath(os.path.join(dirpath, d), root))
        for f in filenames:
            p = os.path.join(dirpath, f)
            files[os.path.relpath(p, root)] = b"<link>" if os.path.islink(p) else open(p, "rb").read()
    return files, sorted(dirs)


def _kind(rel: str) -> str:
    """The kind of path a mutation touched, for the summary (lock, journal, original, checkout file...)."""
    if rel == ".mbpatch.lock":
        return "lock"
    if rel.startswith(".mbpatch/originals"):
        return "original" + ("-tmp" if rel.endswith(".mbpatch-tmp") else "")
    if rel.startswith(".mbpatch/journal") or rel.startswith(".mbpatch/.journal"):
        return "journal" + ("-tmp" if rel.endswith(".mbpatch-tmp") else "")
    if rel.startswith(".mbpatch"):
        return "mbpatch-dir"
    return "checkout" + ("-tmp" if rel.endswith(".mbpatch-tmp") else "")


def _instrument(root: Path, crash_at: Optional[int], log: List[Tuple[str, str]]) -> None:
    """Wrap the os calls that change the filesystem; count those under `root`; crash before the crash_at-th."""
    top = str(root.resolve())
    fds = set()

    def under(path) -> Optional[str]:
        if isinstance(path, int):
            return None
        p = os.path.abspath(os.fspath(path))
        return os.path.relpath(p, top) if p == top or p.startswith(top + os.sep) else None

    def point(call: str, rel: Optional[str]) -> None:
        if rel is None:
            return
        log.append((call, rel))
        if crash_at is not None and len(log) == crash_at:
            os._exit(CRASHED)

    def wrap_path(name: str):
        real = getattr(os, name)

        def wrapped(path, *a, **kw):
            point(name, under(path) if kw.get("dir_fd") is None else "<dir_fd>")
            return real(path, *a, **kw)

        setattr(os, name, wrapped)

    for name in ("unlink", "remove", "rmdir", "mkdir", "chmod", "truncate"):
        wrap_path(name)

    for name in ("replace", "rename", "symlink"):
        real2 = getattr(os, name)

        def wrapped2(src, dst, *a, _real=real2, _name=name, **kw):
            point(_name, under(dst) or under(src))
            return _real(src, dst, *a, **kw)

        setattr(os, name, wrapped2)

    real_open = os.open

    def os_open(path, flags, *a, **kw):
        rel = under(path) if flags & WRITE_FLAGS else None
        point("os.open", rel)
        fd = real_open(path, flags, *a, **kw)
        if rel is not None:
            fds.add(fd)
        return fd

    os.open = os_open

    for name in ("write", "ftruncate"):
        real_fd = getattr(os, name)

        def wrapped_fd(fd, *a, _real=real_fd, _name=name):
            if fd in fds:
                point(f"os.{_name}", "<fd>")
            return _real(fd, *a)

        setattr(os, name, wrapped_fd)

    real_io_open = io.open

    def io_open(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+"):
            point("open", under(file))
        return real_io_open(file, mode, *a, **kw)

    io.open = builtins.open = io_open


def _mbpatch(root: Path, args: List[str], out: Path, crash_at: Optional[int] = None,
             log_to: Optional[Path] = None) -> int:
    """Run `mbpatch ARGS` in a forked child (the os calls wrapped, see _instrument); returns its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        log: List[Tuple[str, str]] = []
        try:
            sys.stdout = sys.stderr = open(out, "w")
            from mbpatch import cli

            _instrument(root, crash_at, log)
            cli.main(args, prog_name="mbpatch")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 (reported through the exit code and the output file)
            import traceback

            traceback.print_exc()
        finally:
            try:
                if log_to is not None:
                    with os.fdopen(os.open(str(log_to), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as fh:
                        fh.write("\n".join(f"{c}\t{r}" for c, r in log))
                sys.stdout.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


APPLY = ["apply", "--backbone", "mobilenetv2", "--arch", "yolov8", "--no-verify"]
STACKED = ["apply", "--backbone", "mobilenetv2", "--arch", "rtdetr", "--no-verify"]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))
    root = tmp_path_factory.mktemp("every-write") / f"ultralytics-{V}"
    shutil.copytree(unpacked("ultralytics", V, "ultralytics"), root)
    return root


class Sweep:
    def __init__(self, root: Path, tmp: Path):
        self.root = root
        self.tmp = tmp
        self.pristine = _tree(root)
        self.points = 0

    def run(self, args: List[str], **kw) -> Tuple[int, str]:
        out = self.tmp / "out.txt"
        code = _mbpatch(self.root, [*args, "--repo", str(self.root)], out, **kw)
        return code, out.read_text(errors="replace")

    def ok(self, args: List[str]) -> str:
        code, text = self.run(args)
        assert code == 0, f"mbpatch {' '.join(args)}: exit {code}\n{text}"
        return text

    def count(self, args: List[str]) -> List[Tuple[str, str]]:
        log = self.tmp / "log.txt"
        self.ok_with(args, log)
        return [tuple(line.split("\t")) for line in log.read_text().splitlines() if line]

    def ok_with(self, args: List[str], log: Path) -> None:
        out = self.tmp / "out.txt"
        code = _mbpatch(self.root, [*args, "--repo", str(self.root)], out, log_to=log)
        assert code == 0, out.read_text()

    def snapshot(self) -> Tuple[Dict[str, bytes], List[str]]:
        return _tree(self.root)

    def restore(self, state: Tuple[Dict[str, bytes], List[str]]) -> None:
        """From the pristine tree to `state` (only the files that differ are written)."""
        files, dirs = state
        for d in dirs:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            if self.pristine[0].get(rel) != data:
                (self.root / rel).write_bytes(data)

    def assert_pristine(self, where: str, output: str) -> None:
        now = _tree(self.root)
        if now != self.pristine:
            extra = sorted(set(now[0]) - set(self.pristine[0])) + sorted(set(now[1]) - set(self.pristine[1]))
            missing = sorted(set(self.pristine[0]) - set(now[0]))
            changed = sorted(r for r in now[0] if r in self.pristine[0] and now[0][r] != self.pristine[0][r])
            raise AssertionError(f"{where}: not the original tree: extra {extra}, missing {missing}, changed {changed}"
                                 f"\n{output}")

    def revert_clean(self, where: str) -> str:
        code, text = self.run(["revert"])
        assert code == 0, f"{where}: revert exit {code}\n{text}"
        assert "--force" not in text, f"{where}: revert asked for --force\n{text}"
        self.assert_pristine(where, text)
        return text

    def crash_each(self, args: List[str], mutations: List[Tuple[str, str]], setup=None,
                   after_crash_reverts: int = 1) -> None:
        """For k = 1..N: `setup`, run ARGS killed before its k-th mutation, then revert(s) to the original."""
        for k in range(1, len(mutations) + 1):
            where = f"{' '.join(args[:1])} killed before mutation {k}/{len(mutations)} {mutations[k - 1]}"
            if setup:
                setup()
            code, text = self.run(args, crash_at=k)
            assert code == CRASHED, f"{where}: expected the crash, got exit {code}\n{text}"
            self.revert_clean(where)
            self.points += 1
        if setup:  # one past the last mutation: the run completes
            setup()
        code, text = self.run(args, crash_at=len(mutations) + 1)
        assert code == 0, text


@pytest.mark.slow
def test_crash_at_every_mutation_then_revert(checkout, tmp_path):
    """Apply, stacked apply and revert on 8.4.190, each killed before each of its filesystem mutations in
    turn: the next `mbpatch revert` always restores the identical tree (no stray file, no lock), never
    asking for --force. The three sweeps together cover every mutation, not a sample."""
    started = time.monotonic()
    s = Sweep(checkout, tmp_path)

    # counted on a clean run of each, mutations under the checkout only
    first = s.count(APPLY)
    after_first = s.snapshot()
    stacked = s.count(STACKED)
    after_both = s.snapshot()
    reverting = s.count(["revert"])
    s.assert_pristine("the counting runs", "")
    kinds = {(call, _kind(rel)) for call, rel in first + stacked + reverting if not rel.startswith("<")}
    # what must be among them: the lock (creation and removal), the journal, the originals, the checkout's files
    for want in [("os.open", "lock"), ("unlink", "lock"), ("replace", "journal"), ("replace", "original"),
                 ("replace", "checkout"), ("mkdir", "checkout"), ("unlink", "checkout"), ("rmdir", "checkout"),
                 ("unlink", "journal"), ("rmdir", "mbpatch-dir"), ("chmod", "checkout-tmp")]:
        assert want in kinds, (want, sorted(kinds))

    s.crash_each(APPLY, first)
    s.revert_clean("after the apply sweep")

    s.crash_each(STACKED, stacked, setup=lambda: s.restore(after_first))
    s.revert_clean("after the stacked sweep")

    def crashed_revert_then_revert():
        s.restore(after_both)

    s.crash_each(["revert"], reverting, setup=crashed_revert_then_revert)
    s.assert_pristine("after the revert sweep", "")

    total = len(first) + len(stacked) + len(reverting)
    assert s.points == total
    elapsed = time.monotonic() - started
    print(f"\ncrash points: apply {len(first)}, stacked apply {len(stacked)}, revert {len(reverting)}; "
          f"{total} crashes, each followed by a clean revert, in {elapsed:.0f} s")
