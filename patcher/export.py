"""`mbpatch verify --export FORMAT[,FORMAT...]|all`: every export format through the checkout's own exporter and
backend, the patched and the stock model side by side (export_child.py does the work in the target interpreter).

Per format the verdict is one of:
  match              exported, loaded by the checkout's backend, output equal to PyTorch's within the format's
                     tolerance (FORMATS[fmt]["rtol"] x max(1, max |torch output|));
  differs            exported and run, but the output is not PyTorch's (a failure of the patch);
  failed             the patched model does not export or load while the stock model does (a failure of the patch);
  release limit      the stock model fails the same way: the release's or this environment's limit, not the patch's;
  converted, not run the format converts here but its runtime does not exist on this OS (CoreML on Linux);
  missing runtime    a module the format needs is not installed; its pip line is given, nothing is installed;
  not on this machine  the format needs hardware or a vendor toolchain (TensorRT, Edge TPU, RKNN, ...).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import MbpatchError
from .train import _base, child, model_path, stock_path, work_folder
from .verify import Target

CHILD = Path(__file__).with_name("export_child.py")

# convert / run: modules the exporter and the backend import; pip: the line that installs them.
# rtol: how close to PyTorch, per output channel: rtol x max(1, max |channel|), so class scores in [0, 1] are held
# to rtol itself and box coordinates to rtol x their scale (export_child.compare). 1e-3 for every fp32 format:
# each exporter fuses Conv+BatchNorm and the runtimes reorder sums, and with real BatchNorm statistics (the check
# calibrates them) the stock yolo26n's scores move by up to 1.8e-4 in TorchScript and 6.8e-4 in NCNN at imgsz 32.
FORMATS: Dict[str, Dict] = {
    "torchscript": dict(convert=[], run=[], pip=None, rtol=1e-3),
    "onnx": dict(convert=["onnx"], run=["onnxruntime"], pip="pip install onnx onnxruntime", rtol=1e-3,
                 kwargs=dict(simplify=False, dynamic=False)),
    # int8: the modules the exporter's INT8 path needs beyond the format's own (--int8), int8_pip their pip names
    "openvino": dict(convert=["openvino"], run=["openvino"], pip="pip install openvino", rtol=1e-3,
                     int8=["nncf"], int8_pip=["nncf"]),
    "ncnn": dict(convert=["ncnn", "pnnx"], run=["ncnn"], pip="pip install ncnn pnnx", rtol=1e-3),
    "mnn": dict(convert=["MNN"], run=["MNN"], pip="pip install MNN", rtol=1e-3),
    "paddle": dict(convert=["paddle", "x2paddle"], run=["paddle"], pip="pip install 'paddlepaddle>=3.0.0,<3.3.0' x2paddle", rtol=1e-3),
    "executorch": dict(convert=["executorch"], run=["executorch"], pip="pip install executorch", rtol=1e-3),
    # LiteRT (8.4.83 on): litert-torch converts the PyTorch model itself (no ONNX/TensorFlow step), ai-edge-litert's
    # interpreter runs it; ai-edge-quantizer only for --int8 (Ultralytics' export-litert extra holds all three)
    "litert": dict(convert=["litert_torch"], run=["ai_edge_litert"], pip="pip install litert-torch ai-edge-litert",
                   rtol=1e-3, int8=["ai_edge_quantizer"], int8_pip=["ai-edge-quantizer"]),
    "tflite": dict(convert=["tensorflow"], run=["tensorflow"], pip="pip install tensorflow", rtol=1e-3),
    "saved_model": dict(convert=["onnx2tf", "tensorflow"], run=["tensorflow"],
                        pip="pip install tensorflow onnx2tf tf_keras sng4onnx onnx_graphsurgeon", rtol=1e-3),
    "pb": dict(convert=["onnx2tf", "tensorflow"], run=["tensorflow"],
               pip="pip install tensorflow onnx2tf tf_keras sng4onnx onnx_graphsurgeon", rtol=1e-3),
    "coreml": dict(convert=["coremltools"], run=[], pip="pip install coremltools", rtol=1e-3, runs_here=False),
    "engine": dict(not_here="TensorRT needs an NVIDIA GPU"),
}
GOOD = ("match", "converted, not run", "release limit", "not on this machine", "not offered")


def parse_formats(text: str) -> List[str]:
    """`onnx,openvino` -> ['onnx', 'openvino']; `all` -> ['all']. Unknown names are left to the release to judge."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise MbpatchError("--export needs a format (onnx, openvino, ... or all)", step="export")
    if "all" in names and len(names) > 1:
        raise MbpatchError("--export all cannot be combined with other formats", step="export")
    return names


def _verdict(patched: Dict, stock: Optional[Dict]) -> str:
    if patched.get("exported") and "equal" not in patched and not patched.get("error"):
        return "converted, not run"
    if patched.get("equal"):
        return "match"
    stock_bad = stock is not None and not stock.get("equal") and (stock.get("error") or stock.get("exported"))
    if stock_bad and (bool(stock.get("error")) == bool(patched.get("error"))):
        return "release limit"
    return "differs" if patched.get("exported") and not patched.get("error") else "failed"


def _int8_verdict(patched: Dict, stock: Optional[Dict]) -> str:
    """INT8 is not held to an fp32 tolerance: the verdict says how much of PyTorch's top detections survive."""
    if patched.get("top_agreement") is not None:
        sqnr = f", score SQNR {patched['score_sqnr_db']:.0f} dB" if patched.get("score_sqnr_db") is not None else ""
        return f"int8: agreement {patched['top_agreement']:.0%}{sqnr}"
    verdict = _verdict(patched, stock)
    return "differs" if verdict == "converted, not run" else verdict


def export_formats_check(target: Target, arch: str, formats: Sequence[str], python: Optional[str] = None,
                         imgsz: int = 64, work: Optional[str] = None, timeout: float = 1800,
                         stock: bool = True, int8: bool = False) -> Dict:
    """One model yaml (target.patched) through each format, its stock model alongside; one dict per format.
    With int8, the formats that quantize on CPU (FORMATS[fmt]["int8"]) are exported INT8 instead of fp32."""
    folder = work_folder(work, "export")
    if work:  # its own subfolder: the trainer's files stay apart
        folder = work_folder(os.path.join(folder, "export"), "export")
    t0 = time.perf_counter()
    args = _base(target, arch, "detect", folder, imgsz)
    models = [dict(role="patched", model=model_path(target, arch))]
    if stock:
        models.append(dict(role="stock", model=stock_path(target, arch)))
    args.update(models=models, formats="all" if list(formats) == ["all"] else list(formats), table=FORMATS, int8=int8)
    res = child(args, python, timeout, script=CHILD)
    doc: Dict = dict(formats={}, work=folder, model=models[0]["model"], stock_model=models[-1]["model"] if stock else None,
                     imgsz=imgsz, child=res, wall_s=0.0, python=python or sys.executable, int8=int8)
    if not res.get("ok"):
        doc.update(ok=False, error=res.get("error"), wall_s=time.perf_counter() - t0)
        return doc
    rows = res["models"]
    for fmt, skip in res.get("skipped", {}).items():
        verdict = skip["status"]
        if verdict == "missing runtime" and formats == ["all"]:
            verdict = "missing runtime (skipped)"  # `all` checks what this environment can run
        doc["formats"][fmt] = dict(verdict=verdict, **{k: v for k, v in skip.items() if k != "status"})
    for fmt in res.get("formats", []):
        p = rows["patched"]["formats"].get(fmt, {})
        s = rows.get("stock", {}).get("formats", {}).get(fmt) if stock else None
        judge = _int8_verdict if int8 else _verdict
        doc["formats"][fmt] = dict(verdict=judge(p, s), rtol=None if int8 else FORMATS[fmt].get("rtol"), patched=p,
                                   stock=s)
    doc["release_formats"] = res.get("release_formats")
    doc["ok"] = all(row["verdict"] in GOOD or row["verdict"].endswith("(skipped)") or row["verdict"].startswith("int8:")
                    for row in doc["formats"].values())
    doc["wall_s"] = time.perf_counter() - t0
    return doc


def onnx_view(doc: Dict) -> Optional[Dict]:
    """The `--export onnx` document of earlier releases (report.exported reads it), from the ONNX row."""
    row = doc.get("formats", {}).get("onnx")
    if not row or "patched" not in row:
        return None
    ex = dict(row["patched"], ok=bool(row["patched"].get("exported")))
    ex["onnx_shape"] = ex.get("out_shape")
    return dict(format="onnx", work=doc["work"], model=doc["model"], imgsz=doc["imgsz"], export=ex,
                wall_s=doc["wall_s"], ok=row["verdict"] == "match")


def _cell(row: Optional[Dict]) -> str:
    if not row:
        return ""
    if row.get("error"):
        return "error: " + row["error"].splitlines()[0][:160]
    size = f"{row['size_bytes'] / 1e6:.1f} MB" if row.get("size_bytes") else ""
    if row.get("top_agreement") is not None:  # --int8
        rel = f", max rel. error {row['max_rel_error']:.2g}" if row.get("max_rel_error") is not None else ""
        sqnr = "".join(f", {n} SQNR {row[n + '_sqnr_db']:.1f} dB" for n in ("box", "score")
                       if row.get(n + "_sqnr_db") is not None)
        return (f"{size}, top-{row['top_k']} detections kept {row['top_matched']}/{row['top_k']}, score diff "
                f"{row['score_max_diff']:.2g}{rel}{sqnr}")
    if "equal" not in row:
        return size
    if row.get("max_abs_diff") is None:
        return f"{size}, output {row.get('out_shape')} vs torch {row.get('torch_shape')}"
    # per channel: the channel closest to its tolerance (scores: rtol; boxes: rtol x their scale)
    worst = row.get("worst_diff", row["max_abs_diff"])
    diff = f"diff {worst:.2g} {'<=' if row['equal'] else '>'} {row['atol']:.2g}"
    if "compared" in row:
        diff += f", {row['matched']}/{row['compared']} detections"
    return f"{size}, {diff}"


def print_exports(doc: Dict) -> None:
    """verify --export: one row per format, the patched and the stock model side by side."""
    from rich.markup import escape
    from rich.table import Table

    from .report import _notes, console, err

    if doc.get("error"):
        err.print(f"[bold red]export check failed:[/] {escape(str(doc['error']))}", soft_wrap=True)
        return
    title = (f"INT8 export check (imgsz {doc.get('imgsz')}; against PyTorch fp32: PyTorch's top detections kept, same "
             "class, IoU >= 0.5)" if doc.get("int8") else
             f"export check (imgsz {doc.get('imgsz')}; tolerance rtol x max(1, max |torch output channel|))")
    t = Table(title=title, title_justify="left")
    for col in ("format", "verdict", "rtol", "patched", "stock"):
        t.add_column(col, overflow="fold")
    colour = {"match": "green", "differs": "red", "failed": "red", "release limit": "yellow"}
    for fmt, row in doc["formats"].items():
        verdict = row["verdict"]
        c = colour.get(verdict, "yellow" if "missing" in verdict else "cyan" if verdict.startswith("int8:") else "")
        t.add_row(fmt, f"[{c}]{escape(verdict)}[/]" if c else escape(verdict),
                  f"{row['rtol']:g}" if row.get("rtol") else "",
                  escape(_cell(row.get("patched")) or row.get("why") or (row.get("pip") or "")),
                  escape(_cell(row.get("stock"))))
    console.print(t)
    for note in _notes(doc.get("child") or {}):  # settings the check changed for its run (torch.load, dynamo)
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    for fmt, row in doc["formats"].items():
        if row["verdict"].startswith("missing runtime"):
            pip = row.get("pip") or ""
            if pip.startswith("pip ") and doc.get("python"):  # the interpreter that runs the check gets the packages
                pip = f"{doc['python']} -m {pip}"
            console.print(f"[yellow]note:[/] {fmt}: missing package: {escape(pip)} ({', '.join(row.get('missing', []))} not "
                          "installed; mbpatch installs nothing, and Ultralytics' auto-install is off for the check)",
                          soft_wrap=True)
        elif row["verdict"] == "release limit":
            console.print(f"[yellow]note:[/] {fmt}: the stock model fails the same way, so this is the release's or this "
                          "environment's limit, not the patch's", soft_wrap=True)
        elif row["verdict"] in ("failed", "differs") and (row.get("patched") or {}).get("traceback"):
            err.print(escape("\n".join(row["patched"]["traceback"].rstrip().splitlines()[-6:])), soft_wrap=True)
    console.print(f"exported files under {escape(str(doc.get('work')))} ({doc.get('wall_s', 0):.0f} s)")
