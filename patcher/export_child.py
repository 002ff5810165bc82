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


def compare(out, ref, rtol, topk, channel_axis=None):
    """Dense heads element-wise; top-k heads (RT-DETR, YOLO26 end-to-end) as sets of detections.

    A dense detection output holds box coordinates (pixels, up to several times imgsz) beside class scores in
    [0, 1]: one tolerance scaled by the largest value would let any score through, so with `channel_axis` each
    channel gets rtol x max(1, max |channel|) and `atol` is the tolerance of the channel closest to failing."""
    import numpy as np

    res = {"out_shape": list(out.shape), "torch_shape": list(ref.shape), "rtol": rtol}
    if out.shape != ref.shape:
        res.update(max_abs_diff=None, equal=False)
        return res
    if topk and ref.ndim == 3 and ref.shape[-1] >= 6:
        res.update(tc.same_detections(out, ref, rtol=rtol, score_tol=rtol))
        return res
    if not out.size:
        res.update(max_abs_diff=0.0, ref_max_abs=0.0, atol=rtol, equal=True)
        return res
    diff = np.abs(out - ref)
    scale = float(np.abs(ref).max())
    if channel_axis is not None and ref.ndim == 3:
        others = tuple(a for a in range(3) if a != channel_axis % 3)
        atol = rtol * np.maximum(1.0, np.abs(ref).max(axis=others, keepdims=True))
    else:
        atol = np.full((1,) * ref.ndim, rtol * max(1.0, scale))
    ratio = diff / atol
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    worst_atol = float(np.broadcast_to(atol, ref.shape)[worst])
    res.update(max_abs_diff=float(diff.max()), ref_max_abs=scale, atol=worst_atol, worst_diff=float(diff[worst]),
               worst_ratio=float(ratio.max()), equal=bool(ratio.max() <= 1.0))
    return res


def calibrate_batchnorm(model, imgsz, batches=4, size=8):
    """Give an untrained model the BatchNorm statistics of its own activations, in place: a few train-mode passes
    on seeded random images of random brightness (with too few or too alike images the deep layers' variances
    come out near zero and their outputs explode). At initialisation (running mean 0, variance 1, the heads'
    prior biases) a detector's output hardly depends on its input: the patched yolov8n +
    mobilenetv4_hybrid_medium gives the same output, to the last bit, for any image, so an exported file
    computing anything else would still "match". With the statistics of real activations every layer passes on
    a signal, as in a trained model. Returns how many BatchNorm layers were calibrated (0: the passes failed,
    and the model keeps its initial statistics; the sensitivity reported beside the comparison shows it)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the passes
    gen = torch.Generator().manual_seed(1)
    model.train()
    try:
        with torch.no_grad():
            for _ in range(batches):
                model(torch.rand(size, 3, imgsz, imgsz, generator=gen) * torch.rand(size, 1, 1, 1, generator=gen))
    except Exception:  # noqa: BLE001 (a head that cannot run in train mode without targets: keep the initial stats)
        for m in norms:
            m.reset_running_stats()
        return 0
    finally:
        model.eval()
    return len(norms)


def sensitivity(model, x, ref):
    """How much the PyTorch output moves for another image: a comparison is only as strict as this is large."""
    import numpy as np
    import torch

    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        alt = _numpy(tc._first_tensor(model(other)))
    return float(np.abs(alt - ref).max()) if alt.shape == ref.shape and ref.size else None


def _detections(y, topk, channel_axis, k):
    """The k highest-scoring detections of one image as (box xyxy, score, class) rows: dense heads (boxes xywh,
    then one score per class) keep each anchor's best class; top-k heads give xyxy, score, class already."""
    import numpy as np

    y = np.asarray(y[0], dtype=np.float64)
    if topk:
        rows = y[:, :6]
    else:
        y = y.T if channel_axis == 1 else y  # anchors x channels
        xy, wh, scores = y[:, :2], y[:, 2:4], y[:, 4:]
        rows = np.concatenate([xy - wh / 2, xy + wh / 2, scores.max(1, keepdims=True),
                               scores.argmax(1)[:, None].astype(np.float64)], 1)
    return rows[np.argsort(-rows[:, 4], kind="stable")[:k]]


def _iou(a, b):
    import numpy as np

    lt, rb = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:4], b[:, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def agreement(out, ref, topk, channel_axis, k=10):
    """INT8 against PyTorch fp32: not a tolerance but how much of the answer survives. `top_agreement`: the
    share of PyTorch's k best detections that the quantized model also ranks among its 3k best, same class,
    IoU >= 0.5; `score_max_diff` over those pairs; `max_rel_error`: the largest element error over its
    channel's scale (max(1, max |channel|)), as the fp32 comparison measures it."""
    import numpy as np

    res = {"out_shape": list(out.shape), "torch_shape": list(ref.shape), "int8": True}
    if out.shape != ref.shape:
        res.update(top_agreement=None)
        return res
    diff = np.abs(out - ref)
    if not topk and ref.ndim == 3:
        others = tuple(a for a in range(3) if a != channel_axis % 3)
        res["max_rel_error"] = float((diff / np.maximum(1.0, np.abs(ref).max(axis=others, keepdims=True))).max())
        # signal-to-quantization-noise ratio of the boxes and of the scores: independent of how detections rank
        # (an untrained model has many tied scores), and the usual measure of what quantization costs
        boxes = np.take(ref, range(4), axis=channel_axis), np.take(out, range(4), axis=channel_axis)
        scores = (np.take(ref, range(4, ref.shape[channel_axis]), axis=channel_axis),
                  np.take(out, range(4, ref.shape[channel_axis]), axis=channel_axis))
        for name, (r, o) in (("box", boxes), ("score", scores)):
            noise = float(((o - r) ** 2).sum())
            res[f"{name}_sqnr_db"] = float(10 * np.log10(float((r ** 2).sum()) / noise)) if noise > 0 else None
    ref_top, out_top = _detections(ref, topk, channel_axis, k), _detections(out, topk, channel_axis, 3 * k)
    matched, score_diff = 0, 0.0
    for row in ref_top:
        same = out_top[out_top[:, 5] == row[5]]
        if len(same):
            ious = _iou(row, same)
            best = int(np.argmax(ious))
            if ious[best] >= 0.5:
                matched += 1
                score_diff = max(score_diff, abs(float(same[best, 4] - row[4])))
    res.update(top_k=len(ref_top), top_matched=matched, top_agreement=matched / max(1, len(ref_top)),
               score_max_diff=score_diff, max_abs_diff=float(diff.max()) if diff.size else 0.0)
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
    calibrated = calibrate_batchnorm(inner, args["imgsz"])
    x = torch.rand(1, 3, args["imgsz"], args["imgsz"])
    head = inner.model[-1]
    rows = {}
    for fmt in fmts:
        row = rows[fmt] = {}
        t0 = time.perf_counter()
        try:
            kwargs = dict(table[fmt].get("kwargs") or {})
            if args.get("int8"):  # the release's INT8 switch (`quantize=8` from 8.4.83, `int8=True` before)
                kwargs.update({args["int8_arg"]: 8 if args["int8_arg"] == "quantize" else True}, data=args["int8"])
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
                row.update(bn_calibrated=calibrated, input_sensitivity=sensitivity(inner, x, ref))
            finally:
                if e2e_before is not None:
                    inner.end2end = e2e_before
            t1 = time.perf_counter()
            out = _numpy(tc._first_tensor(backend(x)))
            row["run_s"] = time.perf_counter() - t1
            if args.get("int8"):
                row.update(agreement(out, ref, topk, channel_axis=1))
            else:
                row.update(compare(out, ref, table[fmt]["rtol"], topk, channel_axis=1))
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
    calibrated = calibrate_batchnorm(model, args["imgsz"])
    weights = os.path.join(work, "model.pt")
    torch.save({"model": model, "epoch": -1}, weights)  # what the exporter reads: a checkpoint like train.py's
    export, _ = tc._yolov5_module(args, "export")
    common, _ = tc._yolov5_module(args, "models.common")
    x = torch.rand(1, 3, args["imgsz"], args["imgsz"])
    loaded = tc._yolov5_load(args, weights).float().eval()
    with torch.no_grad():
        ref = _numpy(tc._first_tensor(loaded(x)))
    moved = sensitivity(loaded, x, ref)
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
            row.update(run_s=time.perf_counter() - t1, bn_calibrated=calibrated, input_sensitivity=moved)
            row.update(compare(out, ref, table[fmt]["rtol"], False, channel_axis=-1))
        except BaseException as exc:  # noqa: BLE001
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:1500], traceback=traceback.format_exc()[-3000:])
            if isinstance(exc, KeyboardInterrupt):
                raise
    return rows


def _alias(fmt, offered):
    """TFLite was renamed LiteRT in Ultralytics 8.4.83 (`tflite` still exports, as `litert`): either name asks for
    whichever of the two the release offers."""
    twin = {"tflite": "litert", "litert": "tflite"}.get(fmt)
    return twin if twin and fmt not in offered and twin in offered else fmt


def _int8_plan(args, plan, skipped):
    """--int8: the formats whose exporter quantizes on CPU, with the generated detection dataset (exact labels,
    nothing downloaded) as calibration images; `args["int8"]` becomes its data yaml."""
    if args["kind"] == "yolov5":
        raise ValueError("--int8 is checked on Ultralytics checkouts only")
    cfg = importlib.import_module(args["package"] + ".cfg")
    defaults = getattr(cfg, "DEFAULT_CFG_DICT", {})
    args["int8_arg"] = "quantize" if "quantize" in defaults else "int8"
    keep = []
    for fmt in plan:
        needed = args["table"][fmt].get("int8")
        if needed is None:
            skipped[fmt] = {"status": "not offered", "why": "no INT8 export on CPU for this format here"}
        elif missing_modules(needed):
            skipped[fmt] = {"status": "missing runtime", "missing": missing_modules(needed),
                            "pip": "pip install " + " ".join(args["table"][fmt]["int8_pip"])}
        else:
            keep.append(fmt)
    if keep:
        ds = _sibling("datasets")
        args["int8"] = ds.make("detect", os.path.join(args["work"], "calibration"), n_train=4, n_val=32,
                               size=max(64, args["imgsz"]), seed=8)
    return keep


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
    asked = offered if args["formats"] == "all" else [_alias(f, offered) for f in args["formats"]]
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
    if args.get("int8"):
        plan = _int8_plan(args, plan, skipped)
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
