"""`mbpatch fetch`: a source checkout of one release, made from the package index's source distribution.

    mbpatch fetch ultralytics==8.4.190 ./ultralytics
    mbpatch fetch yolov5==7.0.14 ./yolov5

`pip download --no-deps --no-binary :all: DIST==VERSION` fetches the release's sdist (the same files its git
tag holds for the package, plus `pyproject.toml`/`setup.py`), which is unpacked into DIR, made a git
repository and committed once, so `mbpatch doctor` and `git diff` see a clean checkout and
`pip install -e DIR` installs it editable. What each gives:

- ultralytics: the git clone's layout (`DIR/ultralytics/` package, `DIR/pyproject.toml`);
- yolov5: the PyPI layout (`DIR/yolov5/` package, imported as `yolov5.models...`), not the git clone's
  (`models/` at the root): the git layout exists only in the GitHub repository. Where pip cannot prepare the
  sdist (7.0.14's setup.py reads a requirements.txt the sdist lacks), the release's wheel is unpacked
  instead: the same package files, without setup.py.

Standard library only (besides pip, run as a subprocess of this interpreter).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

from . import MbpatchError

DISTS = ("ultralytics", "yolov5")
# build outputs of `pip install -e DIR`, and mbpatch's own journal: kept out of `git status`
EXCLUDE = ("*.egg-info/", "build/", "__pycache__/", "*.pyc", ".mbpatch/", ".mbpatch.lock")
SPEC = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:==\s*([0-9][0-9A-Za-z.+!-]*))?\s*$")


def parse_spec(spec: str) -> Tuple[str, Optional[str]]:
    m = SPEC.match(spec)
    if not m or m.group(1).lower() not in DISTS:
        raise MbpatchError(f"cannot fetch '{spec}': give ultralytics[==VERSION] or yolov5[==VERSION]",
                           file=spec, step="fetch")
    return m.group(1).lower(), m.group(2)


def check_dest(dest: str) -> Path:
    """The folder fetch will fill, checked before anything is downloaded: new, or an empty folder (a symlink to
    an empty folder is that folder)."""
    path = Path(dest).expanduser()
    if path.is_symlink():
        if not path.exists():
            raise MbpatchError("is a symlink to a missing folder; create the folder it points to, or give fetch "
                               "a new or empty folder", file=str(path), step="fetch")
        path = path.resolve()
    _check_dest(path)
    return path.absolute()


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise MbpatchError("is a file; give fetch a new or empty folder", file=str(dest), step="fetch")
    if dest.is_dir() and any(dest.iterdir()):
        raise MbpatchError("is not empty; give fetch a new or empty folder (nothing was changed)",
                           file=str(dest), step="fetch")


def _download(dist: str, version: Optional[str], into: Path, python: str, binary: bool = False) -> Path:
    req = f"{dist}=={version}" if version else dist
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    cmd = [python, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check", "-q", "-d", str(into), req]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(p for p in into.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tgz", ".whl")))
    if proc.returncode != 0 or len(archives) != 1:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines()
                 if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln
                 and not ln.strip().startswith(("note:", "hint:", "╰", "│", "×"))]
        errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]*Error: ", ln)]  # the build's own exception, if any
        why = (errors or lines or [f"pip exited {proc.returncode}"])[-1]
        raise MbpatchError(f"pip could not download the {'wheel' if binary else 'source distribution'} of {req}: {why}",
                           file=req, step="fetch")
    return archives[0]


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack the sdist into `into` and return its one top folder (a wheel: a folder of its files without its
    .dist-info); refuse members that leave it."""
    into.mkdir()
    base = into.resolve()
    if archive.name.endswith((".zip", ".whl")):
        if archive.name.endswith(".whl"):
            base = base / "wheel"
            base.mkdir()
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _safe(names, base, archive)
            z.extractall(base)
        if archive.name.endswith(".whl"):
            return base
    else:
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if m.isfile() or m.isdir()]  # no links, devices
            _safe([m.name for m in members], base, archive)
            for m in members:  # the files become the user's: no owner or odd modes from the archive
                m.mode = (m.mode | 0o600) & 0o777 if m.isfile() else 0o755
                m.uid, m.gid, m.uname, m.gname = getattr(os, "getuid", int)(), getattr(os, "getgid", int)(), "", ""
            t.extractall(base, members=members)
    tops = [p for p in base.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise MbpatchError("the source distribution does not hold one top folder", file=str(archive), step="fetch")
    return tops[0]


def _safe(names, base: Path, archive: Path) -> None:
    for name in names:
        target = (base / name).resolve()
        if target != base and base not in target.parents:
            raise MbpatchError(f"refusing archive member outside the folder: {name}", file=str(archive), step="fetch")


def _version(top: Path, dist: str) -> str:
    pkg_info = top / "PKG-INFO"
    infos = sorted(top.glob("*.dist-info"))
    if infos:  # a wheel: its METADATA says the version; the .dist-info folder is not part of a checkout
        pkg_info = infos[0] / "METADATA"
    if pkg_info.is_file():
        for line in pkg_info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return top.name[len(dist) + 1:]


def _git(dest: Path, dist: str, version: str, source: str = "source distribution") -> Optional[str]:
    """git init + one commit of everything; the commit id, or None without git."""
    if shutil.which("git") is None:
        return None
    ident = ["-c", "user.name=mbpatch fetch", "-c", "user.email=mbpatch@localhost", "-c", "commit.gpgsign=false"]
    run = dict(cwd=str(dest), capture_output=True, text=True, check=True)
    try:
        subprocess.run(["git", "init", "-q"], **run)
        (dest / ".git" / "info").mkdir(parents=True, exist_ok=True)
        with open(dest / ".git" / "info" / "exclude", "a", encoding="utf-8") as fh:
            fh.write("# mbpatch fetch: build outputs and mbpatch's journal\n" + "\n".join(EXCLUDE) + "\n")
        subprocess.run(["git", "add", "-A", "."], **run)
        subprocess.run(["git", *ident, "commit", "-q", "--no-verify", "-m",
                        f"{dist} {version} from the package index's {source} (mbpatch fetch)"], **run)
        return subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or e.stdout or "").strip().splitlines()
        raise MbpatchError(f"git failed: {lines[0] if lines else e}",
                           file=str(dest), step="fetch") from None


def fetch(spec: str, dest: str, python: Optional[str] = None) -> Dict:
    """Make DIR a source checkout of the release; returns what was done (dist, version, root, commit, layout)."""
    dist, version = parse_spec(spec)
    path = check_dest(dest)
    try:
        return _fetch(dist, version, path, python)
    except OSError as e:  # a folder fetch cannot write (permissions, a full disk): one line, nothing left behind
        raise MbpatchError(f"{e.strerror or e}; nothing was fetched", file=str(e.filename or path), step="fetch") from None


def _fetch(dist: str, version: Optional[str], path: Path, python: Optional[str]) -> Dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mbpatch-fetch-", dir=str(path.parent)) as tmp:
        (Path(tmp) / "download").mkdir()
        note = None
        try:
            archive = _download(dist, version, Path(tmp) / "download", python or sys.executable)
        except MbpatchError as e:  # e.g. yolov5 7.0.14's sdist: its setup.py reads a file the sdist lacks
            (Path(tmp) / "download-wheel").mkdir()
            archive = _download(dist, version, Path(tmp) / "download-wheel", python or sys.executable, binary=True)
            note = f"{e}; fetched the wheel instead (the same package files, no setup.py: `pip install -e` cannot install it)"
        top = _unpack(archive, Path(tmp) / "unpacked")
        got = _version(top, dist)
        for info in top.glob("*.dist-info"):
            shutil.rmtree(info)
        _check_dest(path)  # still new or empty after the download
        if path.is_dir():
            path.rmdir()
        top.rename(path)  # same file system: one rename, so DIR is either absent or complete
    commit = _git(path, dist, got, "wheel" if archive.name.endswith(".whl") else "source distribution")
    layout = "git clone layout (ultralytics/ package at the root)" if dist == "ultralytics" else \
        "PyPI layout (yolov5/ package at the root, imported as yolov5.models)"
    return dict(ok=True, dist=dist, version=got, root=str(path), archive=archive.name, commit=commit, layout=layout,
                note=note)
