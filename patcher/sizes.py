"""Backbone sizes for `mbpatch list --arch` and apply's "heavier than stock" line: parameters and GFLOPs at 640 of
each catalogue backbone alone, beside the stock backbone of an arch at each scale.

Measured once in a subprocess (`sizes_child.py`: torch and the installed Ultralytics, or the checkout given)
and cached in `<cache>/sizes.json`, keyed by the interpreter, the template file's bytes and the Ultralytics
release, so `mbpatch list` without `--arch` imports nothing of this.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import MbpatchError
from .child_env import child_env
from .templates import AVAILABLE, CATALOG

CHILD = Path(__file__).with_name("sizes_child.py")
MARKER = "@@MBPATCH-SIZES@@"
ARCHS = ("rtdetr", "yolov8", "yolo11", "yolo12", "yolo26", "yolov5")  # every arch apply accepts (cli.ALL_ARCHS)


def cache_file() -> Path:
    return Path(os.environ.get("MBPATCH_CACHE") or Path.home() / ".cache" / "mbpatch") / "sizes.json"


def _ultralytics_release(python: Optional[str], root: Optional[str]) -> str:
    """The Ultralytics release the stock rows come from, read from its __init__.py without importing it."""
    if root:
        init = Path(root) / "ultralytics" / "__init__.py"
    elif python is None or Path(python).resolve() == Path(sys.executable).resolve():
        import importlib.util

        spec = importlib.util.find_spec("ultralytics")
        init = Path(spec.origin) if spec and spec.origin else None
    else:
        return f"of {python}"
    text = init.read_text(encoding="utf-8", errors="replace") if init and init.is_file() else ""
    m = re.search(r"""__version__\s*=\s*["']([^"']+)""", text)
    return m.group(1) if m else "none"


def _load() -> Dict:
    try:
        return json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save(cache: Dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the next run the measurement
        pass


def sizes(arch: str, ids: List[str], python: Optional[str] = None, root: Optional[str] = None) -> Dict:
    """{"stock": {"source", "scales": {scale: {params, gflops}}} or None, "backbones": {id: {params, gflops}},
    "error": text or None}; measures what the cache lacks."""
    py = str(Path(python or sys.executable))
    cache = _load()
    bb_keys = {i: f"backbone|{py}|{i}|{hashlib.sha256(CATALOG[i].template.read_bytes()).hexdigest()[:16]}" for i in ids}
    stock_key = f"stock|{py}|{arch}|{_ultralytics_release(python, root)}"
    todo = {i: [str(CATALOG[i].template), CATALOG[i].cls] for i, k in bb_keys.items() if k not in cache}
    error = None
    if todo or stock_key not in cache:
        args = {"backbones": todo, "arch": arch if stock_key not in cache else None, "root": root}
        env = child_env()
        try:
            proc = subprocess.run([py, str(CHILD), json.dumps(args)], capture_output=True, text=True, env=env,
                                  timeout=1800, cwd=root or None)
        except FileNotFoundError:
            raise MbpatchError("interpreter not found", file=py, step="sizes") from None
        except subprocess.TimeoutExpired:
            proc = None
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(MARKER)), None) if proc else None
        out = json.loads(line[len(MARKER):]) if line else {"ok": False, "error": "the measuring process died"}
        if out.get("ok"):
            for i, v in out["backbones"].items():
                cache[bb_keys[i]] = v
            if out.get("stock"):
                cache[stock_key] = out["stock"]
            _save(cache)
        else:
            error = out.get("error")
    return {"arch": arch, "stock": cache.get(stock_key), "backbones": {i: cache.get(k) for i, k in bb_keys.items()},
            "error": error}


def lighter_at(backbone: Dict, stock: Optional[Dict]) -> List[str]:
    """Scales at which the backbone has fewer parameters and (when counted) fewer GFLOPs than the stock one."""
    if not backbone or not stock:
        return []
    out = []
    for scale, s in stock["scales"].items():
        fewer_flops = backbone["gflops"] is None or s["gflops"] is None or backbone["gflops"] < s["gflops"]
        if backbone["params"] < s["params"] and fewer_flops:
            out.append(scale)
    return out


def lighter_scales(arch: str, bid: str, python: Optional[str] = None) -> Optional[Tuple[str, str, List[str]]]:
    """(arch, backbone id, scales at which it is lighter than the stock backbone), None if not measurable."""
    if arch not in ARCHS or bid not in CATALOG:
        return None
    try:
        got = sizes(arch, [bid], python)
    except MbpatchError:
        return None
    if got["stock"] is None or got["backbones"].get(bid) is None:
        return None
    return arch, bid, lighter_at(got["backbones"][bid], got["stock"])


def table(arch: str, python: Optional[str] = None) -> Dict:
    ids = [b for b in CATALOG if b in AVAILABLE]
    got = sizes(arch, ids, python)
    got["lighter_at"] = {i: lighter_at(v, got["stock"]) for i, v in got["backbones"].items() if v}
    return got
