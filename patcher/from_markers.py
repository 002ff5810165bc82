"""`mbpatch revert --from-markers`: give back the release's bytes when the journal is gone.

A checkout whose `.mbpatch/` was deleted (`git clean -fdx`, a copy without hidden folders) still carries
mbpatch's edits, marked `# mbpatch:`. The markers alone cannot undo them exactly (`stride = 640` does not say
what it replaced), so the release itself is the reference: the same release's files (a wheel or folder given
with `--source`, else `pip download --no-deps <dist>==<version>`) are patched again, in memory, with the
applies the checkout shows (each generated yaml names its family, task and backbone; the parse_model branch
gives their order), and every file is compared:

- a file mbpatch edited that is now byte-for-byte what the replay gives goes back to the release's bytes;
- a file mbpatch created (its first line is the marker) that the replay also creates is removed;
- any other difference is your edit: refused, as `revert` refuses, unless `--force`, which first saves your
  copy under `.mbpatch/edited-<time>/`.

So the result is exact or nothing is written. Not for YOLOv5 git clones (no release archive holds their
files: use `git checkout --`), nor for a checkout that is not a release (a commit between two tags): its
files differ from the release's and every one of them is reported.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import MbpatchError
from .checkout import detect
from .checkout_base import Checkout
from .engine import RevertPlan
from .recipe_index import kind_recipes
from .safety import MARK, find_markers

DIST = {"ultralytics": "ultralytics", "yolov5": "yolov5"}


@dataclass
class Apply:
    """One apply as the checkout shows it."""

    backbone: str
    arch: str
    task: str = "detect"
    nc: int = 80
    scale: str = "n"
    head: str = "stock"
    style: str = "backbone"
    guessed: bool = False  # its yaml is gone: the arch is one that replays to the same code edits


@dataclass
class Recovery:
    plan: RevertPlan
    source: str  # where the release's files came from
    applies: List[Apply] = field(default_factory=list)
    options: Dict[str, object] = field(default_factory=dict)


# --- the release's files --------------------------------------------------------------------------------------


def release_version(co: Checkout) -> str:
    """The release number alone (YOLOv5's version string also names its code era)."""
    found = re.match(r"\d+(\.\d+)*", co.version.strip())
    if not found:
        raise MbpatchError(f"cannot tell which release this checkout is ({co.version!r}); pass --source",
                           file=str(co.root), step="from-markers")
    return found.group(0)


def release_tree(co: Checkout, source: Optional[str], work: Path) -> Tuple[Path, str]:
    """A folder laid out like the checkout root, holding the release's package; and where it came from."""
    if co.kind == "yolov5" and co.layout == "git":
        raise MbpatchError("--from-markers needs the release's files, and no release archive holds a YOLOv5 git "
                           "clone's: `git checkout -- <files>` restores them (doctor lists them)",
                           file=str(co.root), step="from-markers")
    pkg_rel = co.package.resolve().relative_to(co.root.resolve()).as_posix()
    name = co.package.name
    dist = f"{DIST[co.kind]}=={release_version(co)}"
    if source is None:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               dist, "-d", str(work / "dl")], capture_output=True, text=True)
        wheels = sorted((work / "dl").glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise MbpatchError(f"cannot download {dist} to compare with ({(proc.stderr or '').strip()[-200:]}); pass "
                               "--source with that release's wheel or an unpacked copy", file=str(co.root),
                               step="from-markers")
        source_path, label = wheels[0], f"{dist} (from the package index)"
    else:
        source_path = Path(source).expanduser().resolve()
        label = f"{dist} ({source_path})"
    dest = work / "release"
    if source_path.is_file() and source_path.suffix == ".whl":
        with zipfile.ZipFile(source_path) as z:
            for member in z.namelist():
                if member.startswith(name + "/"):
                    z.extract(member, work / "unzipped")
        found = work / "unzipped" / name
    elif source_path.is_dir():
        found = next((p for p in (source_path / name, source_path) if (p / "__init__.py").is_file()
                      and p.name == name), None)
    else:
        found = None
    if found is None or not found.is_dir():
        raise MbpatchError(f"--source holds no `{name}/` package (give a wheel or the folder that contains it)",
                           file=str(source_path), step="from-markers")
    theirs = _source_version(found)
    if theirs != release_version(co):  # another release's files would be written: never, --force or not
        raise MbpatchError(f"--source is release {theirs or 'unknown'} (its {name}/__init__.py), not this checkout's "
                           f"{release_version(co)}; nothing was changed: pass {dist}'s wheel or folder",
                           file=str(source_path), step="from-markers")
    shutil.copytree(found, dest / pkg_rel, ignore=shutil.ignore_patterns("__pycache__"))
    return dest, label


def _source_version(package: Path) -> Optional[str]:
    """The release number `package/__init__.py` declares (`__version__ = "8.4.190"`), or None."""
    try:
        text = (package / "__init__.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"""^__version__\s*=\s*['"](\d+(?:\.\d+)*)""", text, re.M)
    return found.group(1) if found else None


# --- what the checkout shows ----------------------------------------------------------------------------------


def _yaml_applies(co: Checkout, created: Sequence[str]) -> List[Apply]:
    import yaml

    from .recipes.families import arch_and_task_of
    from .recipes.ultralytics.model_yaml import LIGHT_OUT
    from .templates import CATALOG

    ids = sorted(CATALOG, key=len, reverse=True)
    out = []
    for rel in created:
        path = co.root / rel
        if path.suffix != ".yaml":
            continue
        stem = path.stem
        bid = next((i for i in ids if stem.endswith("-" + i)), None)
        if bid is None:
            continue
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            d = None
        stock = stem[: -len(bid) - 1]
        arch, task = arch_and_task_of(d, stock, co.kind)
        nc = int(d.get("nc", 80)) if isinstance(d, dict) and str(d.get("nc", 80)).isdigit() else 80
        scale = ("x" if stock.endswith("-x") else "l") if arch == "rtdetr" else "n"
        head = "light" if path.name == LIGHT_OUT.format(id=bid) else "stock"  # the light neck has its own name
        out.append(Apply(bid, arch, task, nc, scale, head))
    return out


def _first_mentions(co: Checkout) -> Dict[str, int]:
    """catalogue id -> where one of its names first appears, as a whole word, in the model-building file:
    parse_model's branch lists the first apply's names first (`MobileNetV2` is not found in `MobileNetV2_050`)."""
    from .templates import CATALOG

    text = co.read(co.files.get("tasks") or co.files.get("yolo")) or ""
    out = {}
    for bid, bb in CATALOG.items():
        hits = [m.start() for m in (re.search(rf"\b{re.escape(n)}\b", text) for n in bb.names) if m]
        if hits:
            out[bid] = min(hits)
    return out


def _weights_path(co: Checkout, marks: Sequence[Tuple[str, int]]) -> Optional[str]:
    for rel, _ in marks:
        if rel.endswith("__init__.py"):
            found = re.search(r"default_weights\s*=\s*r?['\"]([^'\"]+)['\"]", (co.root / rel).read_text(encoding="utf-8"))
            if found:
                return found.group(1)
    return None


# --- replay and compare ---------------------------------------------------------------------------------------


def _replay(release: Path, co: Checkout, applies: List[Apply], rect_off: bool, weights: Optional[str],
            work: Path) -> Tuple[Dict[str, bytes], List[str]]:
    """A copy of the release patched by `applies`, as apply would: ({path: bytes} of every file the applies
    changed or created, the folders they created)."""
    from . import engine
    from .recipes import Context
    from .templates import lookup

    recipes = kind_recipes(co.kind).RECIPES
    tree_root = Path(tempfile.mkdtemp(dir=work))
    shutil.rmtree(tree_root)
    shutil.copytree(release, tree_root)
    tree = detect(str(tree_root))
    out: Dict[str, bytes] = {}
    dirs: List[str] = []
    for a in applies:
        ctx = Context(tree, lookup(a.backbone), a.arch, nc=a.nc, scale=a.scale, head=a.head, rect_off=rect_off,
                      weights=weights, style=a.style, task=a.task)
        p = engine.plan(ctx, recipes)
        for rel, data in p.changes.items():
            path = tree_root / rel
            for parent in reversed(list(path.relative_to(tree_root).parents)[:-1]):
                if not (tree_root / parent).is_dir():
                    dirs.append(parent.as_posix())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            out[rel] = data
    return out, dirs


def _candidates(co: Checkout, created: Sequence[str]) -> List[List[Apply]]:
    """The apply sequences to try: the one the generated yamls show, in the order parse_model names their
    backbones; when the yamls are gone, one apply per backbone whose source mbpatch created, tried with each
    arch of the release."""
    from .templates import lookup

    first = _first_mentions(co)
    shown = sorted(_yaml_applies(co, created), key=lambda a: first.get(a.backbone, float("inf")))
    if shown:
        return [shown]
    families = {Path(rel).stem.replace("mbpatch_", "") for rel in created if rel.endswith(".py")}
    # no created file left either (`git clean -fdx`): the backbones the model-building file names
    backbones = [b for b in sorted(first, key=first.get) if not families or lookup(b).family in families]
    return [[Apply(b, arch, guessed=True) for b in backbones] for arch in kind_recipes(co.kind).ARCHS] if backbones else []


class _Bytes:
    """The bytes of a tree's files by path (None: no such file), each read once: every candidate replay is
    compared with the same checkout and the same release."""

    def __init__(self, root: Path):
        self.root, self._read = root, {}

    def __call__(self, rel: str) -> Optional[bytes]:
        if rel not in self._read:
            path = self.root / rel
            self._read[rel] = path.read_bytes() if path.is_file() else None
        return self._read[rel]


def recover(repo: str, source: Optional[str] = None) -> Recovery:
    """Plan the revert of an orphaned patch: nothing is written here (engine.revert writes the plan)."""
    co = detect(repo)
    marks = find_markers(co)
    if not marks:
        raise MbpatchError(f"no file carries mbpatch's {MARK} marker: nothing of mbpatch's to revert",
                           file=str(co.root), step="from-markers")
    created = [rel for rel, line in marks if line == 1]
    with tempfile.TemporaryDirectory(prefix="mbpatch-release-") as tmp:
        work = Path(tmp)
        release, label = release_tree(co, source, work)
        now, original = _Bytes(co.root), _Bytes(release)
        missing = [rel for rel, line in marks if line != 1 and original(rel) is None]
        if missing:
            raise MbpatchError(f"{', '.join(missing)} carry mbpatch's marker but are not files of {label}: is this "
                               f"checkout {co.kind} {release_version(co)}?", file=missing[0], step="from-markers")
        weights = _weights_path(co, marks)
        best, best_score, failed = None, None, None
        for applies in _candidates(co, created):
            for rect_off in (False, True):  # rect=False carries no marker: the replay that matches more files wins
                try:
                    replay, dirs = _replay(release, co, applies, rect_off, weights, work)
                except MbpatchError as e:  # a guess this release cannot build (an arch it lacks): try the next
                    failed = e
                    continue
                diff = _differences(now, original, replay, marks)
                same = sum(now(rel) == data for rel, data in replay.items())
                score = (len(diff), -same)
                if best_score is None or score < best_score:
                    best, best_score = (diff, applies, rect_off, replay, dirs), score
        if best is None:
            why = f" (replaying failed: {failed.line()})" if failed else ""
            raise MbpatchError("the marked files name no backbone of mbpatch's catalogue that replays on this release, "
                               f"so the edits cannot be undone from it{why}; restore the files with git or from the "
                               "release", file=marks[0][0], step="from-markers")
        diff, applies, rect_off, replay, dirs = best
        rp = RevertPlan(entries=len(applies))
        for rel in replay:
            if now(rel) == original(rel):
                rp.already.append(rel)
            else:
                rp.restore[rel] = original(rel)
        for rel in diff:  # your edits: restored too (with --force, after your copy is saved)
            rp.restore[rel] = original(rel)
        rp.edited = list(diff)
        rp.dirs = [d for d in dict.fromkeys(dirs) if not (release / d).is_dir()]
        return Recovery(rp, label, applies, {"rect_off": rect_off, "weights": weights})


def _differences(now: _Bytes, original: _Bytes, replay: Dict[str, bytes], marks) -> List[str]:
    """Your edits, as far as the replay can tell: files the replay wrote that now hold neither its bytes nor
    the release's, and marked files the replay does not write at all."""
    out = []
    for rel in dict.fromkeys(list(replay) + [rel for rel, _ in marks]):
        if rel not in replay or now(rel) not in (replay[rel], original(rel)):
            out.append(rel)
    return sorted(out)
