"""`apply --transfer STOCK.pt`: the stock model's neck and head (COCO's, say) as the patched model's start.

The copy runs in the checkout's interpreter (transfer_child.py): an Ultralytics checkpoint is a pickled model,
read with the checkout's own loader as `YOLO("yolo26n.pt")` reads it. The result is a checkpoint file beside
STOCK.pt (never inside the checkout); training starts from it with `YOLO("<yaml>").load("<file>")`, whose
`train()` rebuilds the model from the yaml and loads the file into it by name and shape, so the copy survives
the rebuild (and the backbone's `--weights` are in the file as built).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

from . import MbpatchError
from .verify import Target

CHILD = Path(__file__).with_name("transfer_child.py")
MARKER = "@@MBPATCH-TRANSFER@@"


def checked_stock(path: str, kind: str) -> Path:
    """The stock checkpoint path, refused before anything is written when it cannot be used."""
    stock = Path(path).expanduser()
    if kind != "ultralytics":
        raise MbpatchError("--transfer reads Ultralytics checkpoints; YOLOv5 checkouts are not supported yet",
                           file=str(path), step="transfer")
    if not stock.is_file():
        raise MbpatchError("--transfer: no such checkpoint file (a .pt of the stock model of the same family, task "
                           "and scale, e.g. yolo26n.pt or your own best.pt)", file=str(path), step="transfer")
    return stock.resolve()


def out_path(stock: Path, target: Target) -> Path:
    name = Path(target.load_name or target.patched.name).stem
    return stock.with_name(f"{name}-from-{stock.stem}.pt")


def run(target: Target, stock: Path, python: Optional[str] = None, timeout: float = 900) -> Dict:
    out = out_path(stock, target)
    args = dict(root=str(target.root), package=target.package, model=target.model, yaml=str(target.patched),
                scale=target.scale, nc=target.nc, stock=str(stock), out=str(out))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", YOLO_VERBOSE="False", YOLO_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([python or sys.executable, str(CHILD), json.dumps(args)], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=str(target.root))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MbpatchError(f"--transfer could not run ({type(e).__name__}); the patch is applied, no file was written",
                           file=str(stock), step="transfer") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            break
    else:
        tail = (proc.stderr.strip().splitlines() or ["no result"])[-1]
        result = {"ok": False, "error": tail}
    if not result.get("ok"):
        raise MbpatchError(f"--transfer failed ({result.get('error', '')[:300]}); the patch is applied "
                           "(`mbpatch revert` undoes it), no transfer file was written", file=str(stock), step="transfer")
    result["load"] = f'.load("{out}")'
    return result


def summary(result: Dict) -> str:
    skipped = ", ".join(f"{r['index']} {r['type']}" for r in result["layers_not_transferred"]) or "none"
    partly = ", ".join(f"{r['index']} {r['type']} ({r['transferred']}/{r['tensors']})"
                       for r in result["layers_partly_transferred"]) or "none"
    return (f"transferred {result['tensors']} of {result['neck_head_tensors']} neck/head tensors "
            f"({result['params']:,} parameters) into {result['out']}; layers not transferred: {skipped}; "
            f"partly: {partly}. Train from it: model = YOLO(<the yaml above>){result['load']}; model.train(...) "
            "(the trainer rebuilds from the yaml and loads this file by name and shape)")
