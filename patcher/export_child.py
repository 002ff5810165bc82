"""Export the patched and the stock model to each asked format with the checkout's own exporter, load each
file with the checkout's own backend, and compare its output with PyTorch's on the same input.

Run as a script by the target interpreter (`--python`); like train_child.py (whose helpers it loads by path)
it imports nothing of mbpatch. One JSON document after the marker on the last line of stdout.

    python export_child.py '{"kind": ..., "root": ..., "package": ..., "work": "<tmp>", "imgsz": 64,
                             "models": [{"role": "patched", "model": "<yaml>"}, {"role": "stock", ...}],
                             "formats": ["onnx", ...] | "all", "table": {format: {...}}}'

`table` (from export.py) says per format which modules convert and run it, how close it must come to PyTorch
(`rtol`: times max(1, max |torch output|)), the exporter's keyword arguments, and whether it runs on this
machine at all. A format whose modules are missing is not exported: the exporters would pip-install them
(Ultralytics' auto-install is off here: YOLO_AUTOINSTALL=False; YOLOv5's check_requirements is a no-op).
"""

import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def _sibling(name):
    spec = importlib.util.spec_from_file_location("mbpatch_" + name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tc = _sibling("train_child")


def _missing(name):
    """Not installed, or installed but failing to import for want of a package (the same pip line mends both)."""
    if importlib.util.find_spec(name) is None:
        return True
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return True
    except Exception:  # any other import error belongs to the export's own report
        return False
    return False


def missing_modules(names):
    return [n for n in names if _missing(n)]


def _release_formats(args):
    """The format arguments the checkout's exporter offers (Ultralytics export_formats(); YOLOv5 its own)."""
    if args["kind"] == "yolov5":
        export, _ = tc._yolov5_module(args, "export")
        table = export.export_formats()
        return [a for a in table["Argument"] if a != "-"]
    exporter = importlib.import_module(args["package"] + ".engine.exporter")
    table = exporter.export_formats()
    return [a for a in table["Argument"] if a != "-"]


def _numpy(t):
    import numpy as np

    if hasattr(t, "detach"):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def compare(out, ref, rtol, topk):
    """Dense heads element-wise; top-k heads (RT-DETR, YOLO26 end-to-end) as sets of detections."""
    import numpy as np

    res = {"out_shape": list(out.shape), "torch_shape": list(ref.shape), "rtol": rtol}
    if out.shape != ref.shape:
        res.update(max_abs_diff=None, equal=False)
        return res
    if topk and ref.ndim == 3 and ref.shape[-1] >= 6:
        res.update(tc.same_detections(out, ref, rtol=rtol, score_tol=rtol))
        return res
    diff = float(np.abs(out - ref).max()) if out.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    atol = rtol * max(1.0, scale)
    res.update(max_abs_diff=diff, ref_max_abs=scale, atol=atol, equal=bool(diff <= atol))
    return res


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path) if os.path.exists(path) else None


# --- Ultralytics ---------------------------------------------------------------------------------------------


def _ultralytics_backend(args, path):
    ab = importlib.import_module(args["package"] + ".nn.autobackend").AutoBackend
    import torch

    key = "model" if "model" in inspect.signature(ab.__init__).parameters else "weights"
    return ab(**{key: path, "device": torch.device("cpu"), "fp16": False})


def ultralytics_one(args, model_yaml, fmts, table, work):
    import torch

    torch.manual_seed(0)
    spec = dict(args, model=model_yaml)
    model = tc._ultralytics_model(spec)
    inner = model.model
    inner.pt_path = os.path.join(work, "model.pt")  # the exporter writes next to this name
    inner.eval()
    x = torch.rand(1, 3, args["imgsz"], args["imgsz"])
    head = inner.model[-1]
    rows = {}
    for fmt in fmts:
        row = rows[fmt] = {}
        t0 = time.perf_counter()
        try:
            kwargs = dict(table[fmt].get("kwargs") or {})
            path = str(model.export(format=fmt, imgsz=args["imgsz"], device="cpu", verbose=False, **kwargs))
            row.update(file=path, size_bytes=_size(path), export_s=time.perf_counter() - t0, exported=True)
            if not table[fmt].get("runs_here", True):
                continue
            backend = _ultralytics_backend(args, path)
            meta = getattr(backend, "metadata", None) or {}
            # formats without a top-k op (NCNN, Paddle, ...) export YOLO26 without its end-to-end branch
            e2e_before = getattr(inner, "end2end", None)
            if e2e_before is not None and "end2end" in meta and bool(meta["end2end"]) != bool(e2e_before):
                inner.end2end = bool(meta["end2end"])
                row["end2end"] = bool(meta["end2end"])
            try:
                with torch.no_grad():
                    ref = _numpy(tc._first_tensor(inner(x)))
                topk = type(head).__name__ == "RTDETRDecoder" or bool(getattr(inner, "end2end", False) or
                                                                      getattr(head, "end2end", False))
            finally:
                if e2e_before is not None:
                    inner.end2end = e2e_before
            t1 = time.perf_counter()
            out = _numpy(tc._first_tensor(backend(x)))
            row["run_s"] = time.perf_counter() - t1
            row.update(compare(out, ref, table[fmt]["rtol"], topk))
        except BaseException as exc:  # noqa: BLE001 (a format that fails is data: the next one still runs)
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:1500], traceback=traceback.format_exc()[-3000:])
            if isinstance(exc, KeyboardInterrupt):
                raise
    return rows


# --- YOLOv5 --------------------------------------------------------------------------------------------------

V5_SUFFIX = {"torchscript": ".torchscript", "onnx": ".onnx", "openvino": "_openvino_model", "engine": ".engine",
             "coreml": ".mlmodel", "saved_model": "_saved_model", "pb": ".pb", "tflite": ".tflite",
             "edgetpu": "_edgetpu.tflite", "tfjs": "_web_model", "paddle": "_paddle_model"}


def _failure_log(export):
    """The 'export failure' lines YOLOv5's exporter logs (its try_export swallows the exception)."""
    import logging

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if "failure" in msg:
                lines.append(msg.strip())

    logger = getattr(export, "LOGGER", None)
    if logger is not None:
        logger.addHandler(Keep())
    return lines


def yolov5_one(args, model_yaml, fmts, table, work):
    import torch

    yolo = importlib.import_module(args["package"] + ".yolo")
    torch.manual_seed(0)
    model = yolo.Model(model_yaml, ch=3, nc=args.get("nc", 80))
    weights = os.path.join(work, "model.pt")
    torch.save({"model": model, "epoch": -1}, weights)  # what the exporter reads: a checkpoint like train.py's
    export, _ = tc._yolov5_module(args, "export")
    common, _ = tc._yolov5_module(args, "models.common")
    x = torch.rand(1, 3, args["imgsz"], args["imgsz"])
    with torch.no_grad():
        ref = _numpy(tc._first_tensor(tc._yolov5_load(args, weights).float().eval()(x)))
    failures = _failure_log(export)
    rows = {}
    for fmt in fmts:
        row = rows[fmt] = {}
        t0 = time.perf_counter()
        try:
            files = export.run(weights=weights, imgsz=(args["imgsz"], args["imgsz"]), include=(fmt,), device="cpu",
                               **(table[fmt].get("kwargs") or {}))
            suffix = V5_SUFFIX.get(fmt, fmt)
            hits = [str(f) for f in (files or []) if f and str(f).rstrip("/\\").endswith(suffix)]
            if not hits:  # YOLOv5's try_export logs the exception and returns no file
                why = failures[-1] if failures else "its log says why"
                raise RuntimeError(f"the checkout's exporter wrote no *{suffix}: {why}")
            path = hits[0]
            row.update(file=path, size_bytes=_size(path), export_s=time.perf_counter() - t0, exported=True)
            if not table[fmt].get("runs_here", True):
                continue
            backend = common.DetectMultiBackend(path, device=torch.device("cpu"), fp16=False)
            t1 = time.perf_counter()
            with torch.no_grad():
                out = _numpy(tc._first_tensor(backend(x)))
            row["run_s"] = time.perf_counter() - t1
            row.update(compare(out, ref, table[fmt]["rtol"], False))
        except BaseException as exc:  # noqa: BLE001
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:1500], traceback=traceback.format_exc()[-3000:])
            if isinstance(exc, KeyboardInterrupt):
                raise
    return rows


def main(args):
    tc._prepare(args)
    import torch

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    result = {"python": sys.version.split()[0], "torch": torch.__version__}
    result["env_set"] = tc._weights_only(args)
    tc._check_package(args)
    if args["kind"] == "yolov5":
        result["compat"] = tc._legacy_onnx_export(torch)
    table = args["table"]
    offered = _release_formats(args)
    result["release_formats"] = offered
    asked = offered if args["formats"] == "all" else list(args["formats"])
    plan, skipped = [], {}
    for fmt in asked:
        info = table.get(fmt)
        if fmt not in offered:
            skipped[fmt] = {"status": "not offered", "why": "this release's exporter has no such format"}
        elif info is None or info.get("not_here"):
            skipped[fmt] = {"status": "not on this machine",
                            "why": (info or {}).get("not_here") or "needs its vendor's hardware or toolchain"}
        else:
            needed = info.get("convert", []) + (info.get("run", []) if info.get("runs_here", True) else [])
            lacking = missing_modules(list(dict.fromkeys(needed)))
            if lacking:
                skipped[fmt] = {"status": "missing runtime", "missing": lacking, "pip": info.get("pip")}
            else:
                plan.append(fmt)
    result["formats"], result["skipped"] = plan, skipped
    one = yolov5_one if args["kind"] == "yolov5" else ultralytics_one
    result["models"] = {}
    for m in args["models"]:
        work = os.path.join(args["work"], m["role"])
        os.makedirs(work, exist_ok=True)
        t0 = time.perf_counter()
        result["models"][m["role"]] = {"model": m["model"], "formats": one(args, m["model"], plan, table, work),
                                       "wall_s": time.perf_counter() - t0}
    return result


if __name__ == "__main__":
    try:
        tc._emit({"ok": True, **main(json.loads(sys.argv[1]))})
    except BaseException as exc:  # report any failure as data; the parent decides the exit code
        tc._emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()})
        sys.exit(1)
