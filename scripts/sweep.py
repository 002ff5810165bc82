#!/usr/bin/env python
"""Sweep Ultralytics releases: apply -> build -> forward -> revert, per family and task, and write the table.

For each release: `pip download --no-deps ultralytics==V` into the wheel cache (the same one the tests use),
unpack its `ultralytics/` folder as a checkout, and for each family (arch) and each of its tasks
(detect, segment, pose, obb, classify; yolo26 also semantic and depth):

    mbpatch apply --no-verify   exit 0: patched; exit 2: refused (must have changed zero bytes)
    build and forward           the patched model with the task's model class, from the generated yaml with the
                                checkout first on sys.path, eval mode at 640x640 and 640x480 (all of a release
                                in one process)
    mbpatch revert              must give back the exact bytes (sha256 of every file compared)

Every (family, task) is applied one after the other (stacked, as a user trying several would) and reverted
together. Each family uses one backbone per release, rotating through the catalogue from release to release
(and offset per family), so the sweep covers every backbone. A task passes when all three hold; it is "refused"
when apply said no up front (exit 2, nothing written) — for example rtdetr before 8.0.111 or yolo26's depth task
before 8.4.104; once a family is refused as a whole its other tasks are not tried. Anything else (a refusal that
wrote bytes, a crash, a failed build, a revert that is not byte-identical) is a FAILURE, and the script exits 1.

The results go to a state file as they come (so an interrupted sweep resumes with --resume) and to
docs/compatibility.md after every release.

    python scripts/sweep.py                          # every breakpoint release + 60 spread evenly
    python scripts/sweep.py --versions 8.0.50,8.2.103 --out /tmp/compat.md --state /tmp/state.json
    python scripts/sweep.py --all                    # every release on PyPI from 8.0.0
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MBPATCH_CACHE", Path.home() / ".cache" / "mbpatch"))
REF = REPO.parent / "shared" / "ref" / "ultralytics-versions.md"

# The structural breakpoints of ../shared/ref/ultralytics-versions.md (first release of each change and the
# release before it), used when the ref file is not beside the repository.
BREAKPOINTS = """
8.0.0 8.0.6 8.0.35 8.0.43 8.0.47 8.0.49 8.0.50 8.0.54 8.0.55 8.0.89 8.0.90 8.0.97 8.0.98 8.0.100 8.0.106
8.0.110 8.0.111 8.0.112 8.0.118 8.0.119 8.0.132 8.0.150 8.0.228 8.0.229 8.0.235 8.0.236 8.0.238 8.0.239
8.1.30 8.1.32 8.1.42 8.1.43 8.3.8 8.3.9 8.3.35 8.3.36 8.3.37 8.3.38 8.3.58 8.3.59 8.3.63 8.3.64 8.3.65
8.3.66 8.3.70 8.3.71 8.3.100 8.3.150 8.3.194 8.3.197 8.3.198 8.3.199 8.3.220 8.3.221 8.3.237 8.3.253
8.4.0 8.4.66 8.4.67 8.4.80 8.4.81 8.4.88 8.4.100 8.4.107 8.4.108 8.4.109 8.4.112 8.4.113 8.4.140 8.4.141
8.4.163 8.4.164
""".split()

# the first release of each family and task (families.py) and the release before it: always swept by default
ARRIVALS = "8.0.0 8.0.65 8.0.66 8.0.110 8.0.111 8.0.234 8.0.235 8.3.0 8.3.77 8.3.78 8.3.253 8.4.0 8.4.51 8.4.52 8.4.103 8.4.104".split()
ARCHS = ("yolov8", "yolo11", "yolo12", "yolo26", "rtdetr")
# the tasks of each family (mbpatch's recipes/families.py; repeated so the script runs without mbpatch)
TASKS = {"yolov8": ("detect", "segment", "pose", "obb", "classify"),
         "yolo11": ("detect", "segment", "pose", "obb", "classify"),
         "yolo12": ("detect", "segment", "pose", "obb", "classify"),
         "yolo26": ("detect", "segment", "pose", "obb", "classify", "semantic", "depth"),
         "rtdetr": ("detect",)}
MODEL_OF_TASK = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel",
                 "classify": "ClassificationModel", "semantic": "SemanticSegmentationModel", "depth": "DepthModel"}
BACKBONES = ("mobilenetv2", "mobilenetv4_small", "repvit_m0_9", "mobilenetv4_medium", "repvit_m1", "repvit_m1_0",
             "mobilenetv4_hybrid_medium", "repvit_m1_1", "repvit_m2", "mobilenetv4_large", "repvit_m3",
             "repvit_m1_5", "mobilenetv4_hybrid_large", "repvit_m2_3")
BACKBONE = "mobilenetv2"  # the --backbone of sweeps before the per-task one


def backbone_for(version_index: int, arch: str) -> str:
    """One backbone per family and release, rotating through the catalogue."""
    return BACKBONES[(version_index + list(TASKS).index(arch) * 3) % len(BACKBONES)]


def vkey(v: str):
    return tuple(int(x) for x in v.split("."))


def breakpoints() -> List[str]:
    """Every release named in the ref's breakpoint table (first versions, the ones before, interval ends)."""
    found = set(BREAKPOINTS)
    if REF.is_file():
        text = REF.read_text(encoding="utf-8")
        start = text.find("Breakpoints, in time order")
        end = text.find("Anchors that hold", start)
        if start >= 0:
            found |= set(re.findall(r"\b8\.\d+\.\d+\b", text[start:end]))
    return sorted(found, key=vkey)


def pypi_versions(python: str) -> List[str]:
    """Every final ultralytics release >= 8.0.0 on the package index (one `pip index versions` query)."""
    out = subprocess.run([python, "-m", "pip", "index", "versions", "ultralytics"], capture_output=True,
                         text=True, timeout=120).stdout
    m = re.search(r"Available versions:\s*(.+)", out)
    if not m:
        raise SystemExit("could not list ultralytics releases with `pip index versions ultralytics`")
    vs = [v.strip() for v in m.group(1).split(",")]
    return sorted((v for v in vs if re.fullmatch(r"8\.\d+\.\d+", v)), key=vkey)


def spread(versions: List[str], n: int) -> List[str]:
    """n releases spread evenly over the list (first and last included)."""
    if n >= len(versions):
        return list(versions)
    return sorted({versions[round(k * (len(versions) - 1) / (n - 1))] for k in range(n)}, key=vkey)


def wheel(version: str, python: str) -> Path:
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    hits = sorted(folder.glob(f"ultralytics-{version}-*.whl"))
    if not hits:
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", f"ultralytics=={version}",
                        "-d", str(folder)], check=True, capture_output=True, timeout=600)
        hits = sorted(folder.glob(f"ultralytics-{version}-*.whl"))
    if not hits:
        raise FileNotFoundError(f"no wheel for ultralytics {version}")
    return hits[0]


def digest(root: Path) -> Dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changed(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


class Runner:
    def __init__(self, python: str, offline: bool, timeout: int):
        self.python = python
        self.timeout = timeout
        # Old releases probe the internet at import time (three 2-second connection attempts): a private network
        # namespace makes those fail at once and keeps the sweep's traffic on this machine.
        self.prefix = ["unshare", "-n"] if offline and shutil.which("unshare") and self._unshare_ok() else []
        # YOLO_CONFIG_DIR: releases that honour it keep their settings.yaml out of the user's ~/.config
        self.env = dict(os.environ, YOLO_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
                        YOLO_CONFIG_DIR=str(Path(tempfile.gettempdir()) / "mbpatch-sweep-config"))

    @staticmethod
    def _unshare_ok() -> bool:
        try:
            return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def mbpatch(self, *args) -> subprocess.CompletedProcess:
        cmd = self.prefix + [self.python, "-m", "mbpatch", *map(str, args)]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {self.timeout} s")


def _json(proc: subprocess.CompletedProcess) -> Dict:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"ok": False, "error": " | ".join(tail) or f"exit {proc.returncode}, no output"}


CHECK = r"""
import json, sys
root, jobs, extra = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, root)
sys.path.append(extra)  # packages a release declares but this environment lacks (see declared_dependency)
sys.dont_write_bytecode = True
import torch, yaml
import ultralytics
assert ultralytics.__file__.startswith(root), f"imported {ultralytics.__file__}, not the checkout"
from ultralytics.nn import tasks
out = {}
for arch, rel, cls in jobs:
    try:
        if not hasattr(tasks, cls):
            raise RuntimeError(f"this release's tasks.py has no {cls}")
        d = yaml.safe_load(open(f"{root}/{rel}", encoding="utf-8"))
        if d.get("scales"):
            d["scale"] = "n" if "n" in d["scales"] else next(iter(d["scales"]))
        model = getattr(tasks, cls)(d, nc=80, verbose=False).eval()
        shapes = {}
        with torch.no_grad():
            for h, w in ((640, 640), (480, 640)):
                y = model(torch.zeros(1, 3, h, w))
                while isinstance(y, (list, tuple)):
                    y = y[0]
                if isinstance(y, dict):
                    y = next(iter(y.values()))
                shapes[f"{w}x{h}"] = list(y.shape)
        out[arch] = {"ok": True, "params": sum(p.numel() for p in model.parameters()), "forward": shapes}
    except Exception as e:
        out[arch] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
print("@@SWEEP@@" + json.dumps(out))
"""


def model_class(arch: str, task: str) -> str:
    return "RTDETRDetectionModel" if arch == "rtdetr" else MODEL_OF_TASK[task]


EXTRA = CACHE / "sweep-extra"


def declared_dependency(whl: Path, error: str) -> Optional[str]:
    """The distribution behind `No module named 'x'` when the release itself requires it (e.g. hub-sdk in 8.0.239).

    A user installing that release gets it; this environment may not, and then the stock model cannot be imported
    either. Such a package is installed (without its dependencies) into a folder only the build check appends to
    sys.path, and the table says so.
    """
    m = re.search(r"No module named '([\w.]+)'", error)
    if not m:
        return None
    wanted = m.group(1).split(".")[0].replace("_", "-").lower()
    with zipfile.ZipFile(whl) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        text = z.read(meta).decode("utf-8", "replace") if meta else ""
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            name = re.split(r"[\s<>=!;\[(~]", line.split(":", 1)[1].strip())[0].replace("_", "-").lower()
            if name == wanted:
                return name
    return None


def build_and_forward(run: Runner, root: Path, jobs) -> Dict[str, Dict]:
    """Build each patched model from its yaml and run it at 640x640 and 640x480, in one process per release."""
    cmd = run.prefix + [run.python, "-c", CHECK, str(root), json.dumps(jobs), str(EXTRA)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=run.env, timeout=run.timeout, cwd=str(root))
    except subprocess.TimeoutExpired:
        return {a: {"ok": False, "error": f"timed out after {run.timeout} s"} for a, _, _ in jobs}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@SWEEP@@"):
            return json.loads(line[len("@@SWEEP@@"):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {a: {"ok": False, "error": f"the build process died: {tail}"} for a, _, _ in jobs}


def sweep_version(run: Runner, version: str, work: Path, archs, index: int = 0) -> Dict:
    """apply every (family, task) (stacked) -> build and forward each -> revert, on the release's pristine sources.

    row["archs"][arch][task] is one result; row["backbones"][arch] the backbone that family used in this release.
    """
    t0 = time.perf_counter()
    row: Dict = {"version": version, "archs": {}, "backbones": {}}
    try:
        whl = wheel(version, run.python)
    except (subprocess.SubprocessError, FileNotFoundError, OSError) as e:
        row["skipped"] = f"no wheel on the index ({type(e).__name__})"
        return row
    root = work / f"ultralytics-{version}"
    shutil.rmtree(root, ignore_errors=True)
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith("ultralytics/"):
                z.extract(name, root)
    pristine = digest(root)
    jobs = []
    for arch in archs:
        bb = row["backbones"][arch] = backbone_for(index, arch)
        row["archs"][arch] = {}
        family_refused = None
        for task in TASKS[arch]:
            res: Dict = {"arch": arch, "task": task}
            row["archs"][arch][task] = res
            if family_refused:
                res.update(result="refused", reason=family_refused, step="arch")
                continue
            before = digest(root)
            proc = run.mbpatch("apply", "--repo", root, "--backbone", bb, "--arch", arch, "--task", task,
                               "--no-verify", "--json")
            doc = _json(proc)
            if proc.returncode == 2:
                touched = changed(before, digest(root))
                res.update(result="refused" if not touched else "FAIL", reason=doc.get("error", ""), step=doc.get("step"))
                if touched:
                    res["reason"] = f"refused but changed {', '.join(touched[:5])}: {res['reason']}"
                elif "has no stock" in res["reason"] and not any(root.rglob("*.yaml")):
                    res["note"] = "this release's wheel ships no model yaml files at all"
                if not touched and doc.get("step") == "arch":
                    family_refused = res["reason"]
                continue
            if proc.returncode != 0:
                res.update(result="FAIL", reason=f"apply exit {proc.returncode}: {doc.get('error', '')}")
                continue
            yamls = [c for c in doc.get("changed", []) if c.endswith(".yaml")]
            if len(yamls) != 1:
                res.update(result="FAIL", reason=f"apply wrote {len(yamls)} model yaml files: {yamls}")
                continue
            res["yaml"] = yamls[0]
            jobs.append((f"{arch}/{task}", yamls[0], model_class(arch, task)))
    if jobs:
        built = build_and_forward(run, root, jobs)
        dist = next((declared_dependency(whl, b.get("error", "")) for b in built.values() if not b.get("ok")), None)
        if dist:
            subprocess.run([run.python, "-m", "pip", "install", "-q", "--no-deps", "--target", str(EXTRA), dist],
                           capture_output=True, timeout=600)
            row["extra"] = dist
            built = build_and_forward(run, root, jobs)
        for key, _, _ in jobs:
            arch, task = key.split("/")
            b = built.get(key, {"ok": False, "error": "no result"})
            res = row["archs"][arch][task]
            if b["ok"]:
                res.update(result="pass", params=b["params"], forward=b["forward"])
                if row.get("extra"):
                    res["note"] = f"with {row['extra']}, which this release requires"
            else:
                res.update(result="FAIL", reason=f"build/forward: {b['error']}")
    rev = run.mbpatch("revert", "--repo", root, "--json")
    left = changed(pristine, digest(root))
    row["revert_identical"] = not left
    if rev.returncode != 0 or left:
        for key, _, _ in jobs:
            arch, task = key.split("/")
            res = row["archs"][arch][task]
            res.update(result="FAIL", reason=(res.get("reason", "") + f" revert exit "
                                              f"{rev.returncode}, {len(left)} file(s) differ: {', '.join(left[:5])}").strip())
    shutil.rmtree(root, ignore_errors=True)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# --- the table ---------------------------------------------------------------------------------------------


def _reason(r: Dict) -> str:
    reason = (r.get("reason") or "").replace("|", "\\|").replace("\n", " ")
    reason = re.sub(r"^/\S+: ", "", reason)  # the checkout path is a temp folder
    note = f" ({r['note']})" if r.get("note") else ""
    return reason[:220] + note


def _cell(results: Optional[Dict], backbone: str = "") -> str:
    """One family in one release: its tasks that passed (patched parameters), were refused, or FAILED."""
    if not results:
        return "-"
    rs = list(results.values())
    if all(r["result"] == "refused" for r in rs) and len({r.get("reason") for r in rs}) == 1:
        return f"**refused**: {_reason(rs[0])}"
    parts = []
    passed = [r for r in rs if r["result"] == "pass"]
    if passed:
        note = f"; {passed[0]['note']}" if passed[0].get("note") else ""
        parts.append(f"{backbone + ': ' if backbone else ''}pass " +
                     ", ".join(f"{r['task']} {r['params'] / 1e6:.2f} M" for r in passed) + note)
    for r in rs:
        if r["result"] == "refused":
            m = re.search(r"arrived in ([\d.]+)", r.get("reason") or "")
            parts.append(f"refused {r['task']}" + (f" (arrived in {m.group(1)})" if m else f": {_reason(r)}"))
        elif r["result"] != "pass":
            parts.append(f"**{r['result']}** {r['task']}: {_reason(r)}")
    return "; ".join(parts)


EARLIER = "## Earlier sweeps"


def write_table(rows: List[Dict], out: Path, archs, env: Dict, complete: bool, how: str, marks=frozenset()) -> None:
    rows = sorted(rows, key=lambda r: vkey(r["version"]))
    counts: Dict[str, Dict[str, int]] = {a: {} for a in archs}
    for r in rows:
        for a in archs:
            for res in r["archs"].get(a, {}).values():
                counts[a][res["result"]] = counts[a].get(res["result"], 0) + 1
    lines = [
        "# Compatibility: Ultralytics releases",
        "",
        f"Swept on {env['date']} with `scripts/sweep.py` ({'complete' if complete else 'INCOMPLETE: interrupted, re-run with --resume'}):",
        f"{len(rows)} releases from {rows[0]['version'] if rows else '-'} to {rows[-1]['version'] if rows else '-'}: {how}",
        "",
        "Per release, on the release's own sources (the `ultralytics/` folder of its wheel): `mbpatch apply --no-verify "
        "--arch A --task T` for every family A and each of its tasks T (all stacked), with one backbone per family "
        "rotating through the catalogue from release to release; then each patched model is built from its generated "
        "yaml with the task's model class, the checkout first on `sys.path`, and run forward in eval mode at 640x640 "
        "and 640x480; then `mbpatch revert` and a sha256 comparison of every file with the wheel's.",
        "",
        "- **pass**: applied, built, ran forward at both sizes, and reverted to identical bytes (the backbone, then "
        "the patched parameters of each task).",
        "- **refused**: apply said no up front with the reason shown (exit 2) and changed no byte (a task: the "
        "release it arrived in).",
        "- **FAIL**: anything else (none is expected).",
        "",
        f"Environment: Python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, mbpatch {env['mbpatch']}.",
        "",
        "Totals (family x task results): " + "; ".join(
            f"{a}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items())) for a, c in counts.items()),
        "",
        "A release marked † is one of the structural breakpoints of `shared/ref/ultralytics-versions.md` (the first "
        "release of a change, or the one before it).",
        "",
        "| release | " + " | ".join(archs) + " |",
        "|---|" + "---|" * len(archs),
    ]
    for r in rows:
        name = r["version"] + (" †" if r["version"] in marks else "")
        if r.get("skipped"):
            lines.append(f"| {name} | " + " | ".join([r["skipped"]] * len(archs)) + " |")
            continue
        lines.append(f"| {name} | " + " | ".join(_cell(r["archs"].get(a), r.get("backbones", {}).get(a, ""))
                                               for a in archs) + " |")
    earlier = ""
    if out.is_file():  # tables of earlier sweeps (other columns) are kept below the new one
        old = out.read_text(encoding="utf-8")
        if EARLIER in old:
            earlier = "\n" + old[old.index(EARLIER):].rstrip("\n") + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n" + earlier, encoding="utf-8")


def environment(python: str) -> Dict:
    code = ("import json, sys, torch, mbpatch\ntry:\n import torchvision; tv = torchvision.__version__\nexcept Exception:\n"
            " tv = 'missing'\nprint(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__, "
            "'torchvision': tv, 'mbpatch': mbpatch.__version__}))")
    env = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    env["date"] = dt.date.today().isoformat()
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", help="comma-separated releases (default: breakpoints + --sample spread evenly)")
    ap.add_argument("--sample", type=int, default=60, help="releases spread evenly over all of them (default 60)")
    ap.add_argument("--all", action="store_true", help="every release from 8.0.0")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--python", default=sys.executable, help="interpreter with mbpatch, torch and torchvision")
    ap.add_argument("--out", default=str(REPO / "docs" / "compatibility.md"))
    ap.add_argument("--state", default=str(CACHE / "sweep-state.json"), help="results so far (for --resume)")
    ap.add_argument("--resume", action="store_true", help="skip releases already in the state file")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mbpatch command")
    ap.add_argument("--online", action="store_true", help="do not isolate the builds from the network")
    ap.add_argument("--table-only", action="store_true", help="rewrite --out from the state file, sweep nothing")
    ap.add_argument("--redo", default="", help="with --resume: comma-separated releases to sweep again")
    args = ap.parse_args(argv)

    archs = tuple(a.strip() for a in args.archs.split(",") if a.strip())
    state_path = Path(args.state)
    saved = json.loads(state_path.read_text()) if state_path.is_file() and (args.resume or args.table_only) else {}
    marks = frozenset(breakpoints())
    if args.versions:
        versions = sorted({v.strip() for v in args.versions.split(",") if v.strip()}, key=vkey)
        how = "the releases named with `--versions`."
    elif saved.get("versions"):
        versions, how = saved["versions"], saved["how"]
    else:
        every = pypi_versions(args.python)
        if args.all:
            versions, how = every, f"every release on the package index from 8.0.0 ({len(every)})."
        else:
            picked = set(spread(every, args.sample))
            versions = sorted(picked | (marks & set(every)) | (set(ARRIVALS) & set(every)), key=vkey)
            how = (f"{len(picked)} spread evenly over all {len(every)} releases from {every[0]} to {every[-1]}, plus every "
                   f"structural breakpoint release of `shared/ref/ultralytics-versions.md` and the release before each "
                   f"({len(marks & set(every))}; 8.0.7-8.0.34 were never published), plus the first release of each "
                   "family and task and the one before it.")
    redo = {v.strip() for v in args.redo.split(",") if v.strip()}
    state: Dict[str, Dict] = {r["version"]: r for r in saved.get("rows", []) if r["version"] not in redo}
    if args.table_only:
        rows = [state[x] for x in versions if x in state]
        write_table(rows, Path(args.out), archs, saved["env"], len(rows) == len(versions), how, marks)
        print(f"wrote {args.out} from {state_path}: {len(rows)} of {len(versions)} releases")
        return 0
    env = environment(args.python)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed sweep still removes its temp folder
    run = Runner(args.python, offline=not args.online, timeout=args.timeout)
    print(f"sweeping {len(versions)} releases x {len(archs)} families, every task (network isolated: {bool(run.prefix)})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="mbpatch-sweep-") as tmp:
        for k, v in enumerate(versions, 1):
            if v in state and not state[v].get("skipped"):
                continue
            row = sweep_version(run, v, Path(tmp), archs, versions.index(v))
            state[v] = row
            cells = "  ".join(f"{a}=" + (",".join(f"{t}:{r['result']}" for t, r in row["archs"].get(a, {}).items())
                                        or str(row.get("skipped"))) for a in archs)
            print(f"[{k}/{len(versions)}] {v}  {cells}", flush=True)
            rows = [state[x] for x in versions if x in state]
            state_path.parent.mkdir(parents=True, exist_ok=True)
            state_path.write_text(json.dumps({"env": env, "versions": versions, "how": how, "rows": list(state.values())},
                                             indent=1))
            write_table(rows, Path(args.out), archs, env, len(rows) == len(versions), how, marks)
    rows = [state[x] for x in versions if x in state]
    failures = [(r["version"], a, t) for r in rows for a, ts in r["archs"].items() for t, c in ts.items()
                if c["result"] == "FAIL"]
    print(f"wrote {args.out}: {len(rows)} releases, {len(failures)} failure(s)" + (f": {failures}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
