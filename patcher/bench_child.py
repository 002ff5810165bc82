"""Time stock and patched models, fused, batch 1, on each runtime, alternated in one process (`mbpatch bench`).

Run as a script by the target interpreter; imports nothing of mbpatch (train_child.py's helpers are loaded
by path). Stage lines go to stderr (STAGE + text), one JSON document after the marker on stdout's last line.

    python bench_child.py '{"kind": ..., "root": ..., "package": ..., "work": "<tmp>", "imgsz": 640,
                            "threads": 1, "runs": 20, "runtimes": ["torch", "onnx"] | "default",
                            "models": [{"label": "stock", "scale": "n", "model": "<yaml>"}, ...]}'

Each model is built with the checkout's own code (Ultralytics YOLO(yaml), YOLOv5 Model(yaml)), seeded, fused,
and exported with the checkout's exporter for each runtime other than torch; the runtime is then driven
directly so that its thread count is the one asked. Timing: a few warm-up calls per model and runtime, then
`runs` rounds, each round calling every model once in turn (so a load spike hits all models alike); the
median of a model's calls is its time.
"""

import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
STAGE = "@@MBPATCH-STAGE@@"
OPTIONAL = ("openvino", "litert", "ncnn")  # timed by default when installed
MODULES = {"onnx": ["onnx", "onnxruntime"], "openvino": ["openvino"], "litert": ["ai_edge_litert"],
           "ncnn": ["ncnn", "pnnx"], "torch": []}
PIP = {"onnx": "pip install onnx onnxruntime", "openvino": "pip install openvino",
       "litert": "pip install litert-torch ai-edge-litert",  # Ultralytics >= 8.4.83 (older: tensorflow + onnx2tf)
       "ncnn": "pip install ncnn pnnx"}


def _sibling(name):
    spec = importlib.util.spec_from_file_location("mbpatch_" + name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tc = _sibling("train_child")


def stage(text):
    sys.stderr.write(f"{STAGE}{text}\n")
    sys.stderr.flush()


def _missing(rt):
    return [m for m in MODULES.get(rt, [rt]) if importlib.util.find_spec(m) is None]


def runtimes(asked):
    if asked == "default":
        return ["torch", "onnx"] + [rt for rt in OPTIONAL if not _missing(rt)], {}
    plan, skipped = [], {}
    for rt in asked:
        if rt not in MODULES:
            skipped[rt] = "unknown runtime (torch, onnx, openvino, litert, ncnn)"
        elif _missing(rt):
            skipped[rt] = f"not installed ({', '.join(_missing(rt))}): {PIP[rt]}"
        else:
            plan.append(rt)
    return plan, skipped


# --- building and exporting -----------------------------------------------------------------------------------


def build(args, spec):
    import torch

    torch.manual_seed(0)
    if args["kind"] == "yolov5":
        yolo = importlib.import_module(args["package"] + ".yolo")
        model = yolo.Model(spec["model"], ch=3, nc=args.get("nc", 80)).eval()
        wrapper = None
    else:
        wrapper = tc._ultralytics_model(dict(args, model=spec["model"], task=args.get("task", "detect")))
        model = wrapper.model.eval()
    model = model.fuse() if hasattr(model, "fuse") else model
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    return wrapper, model, params, gflops(args, model)


def gflops(args, model):
    """GFLOPs at the benchmark's image size, by the checkout's own counter (thop)."""
    try:
        if args["kind"] == "yolov5":
            import copy

            import thop
            import torch

            x = torch.zeros(1, 3, args["imgsz"], args["imgsz"])
            return thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)[0] * 2 / 1e9
        tu = importlib.import_module(args["package"] + ".utils.torch_utils")
        return float(tu.get_flops(model, args["imgsz"])) or None
    except Exception:  # noqa: BLE001 (no thop: GFLOPs left out, times still measured)
        return None


def export(args, wrapper, model, rt, work):
    """The file the checkout's exporter writes for the runtime (the fused model, batch 1, static shape)."""
    fmt = {"onnx": "onnx", "openvino": "openvino", "litert": "litert", "ncnn": "ncnn"}[rt]
    if args["kind"] == "yolov5":
        import torch

        weights = os.path.join(work, "model.pt")
        torch.save({"model": model, "epoch": -1}, weights)
        exp, _ = tc._yolov5_module(args, "export")
        include = {"litert": "tflite"}.get(fmt, fmt)
        files = exp.run(weights=weights, imgsz=(args["imgsz"], args["imgsz"]), include=(include,), device="cpu")
        hits = [str(f) for f in files or [] if f]
        if not hits:
            raise RuntimeError(f"YOLOv5's exporter wrote no {fmt} file")
        return hits[0]
    wrapper.model.pt_path = os.path.join(work, "model.pt")
    if fmt == "litert":  # named tflite before Ultralytics 8.4.83
        offered = importlib.import_module(args["package"] + ".engine.exporter").export_formats()["Argument"]
        fmt = fmt if fmt in offered else "tflite"
    kwargs = dict(simplify=False, dynamic=False) if fmt == "onnx" else {}
    return str(wrapper.export(format=fmt, imgsz=args["imgsz"], device="cpu", verbose=False, **kwargs))


def runner(rt, path, model, threads):
    """A zero-argument call running one batch-1 inference on a fixed input."""
    import numpy as np

    if rt == "torch":
        import torch

        t = torch.rand(1, 3, *threads["hw"])

        def call():
            with torch.inference_mode():
                model(t)
        return call
    x = np.random.default_rng(0).random((1, 3, *threads["hw"]), dtype=np.float32)
    n = threads["n"]
    if rt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = n, 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    if rt == "openvino":
        import openvino as ov

        core = ov.Core()
        xml = path if path.endswith(".xml") else next(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".xml"))
        compiled = core.compile_model(xml, "CPU", {"INFERENCE_NUM_THREADS": n, "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        return lambda: req.infer({0: x})
    if rt == "ncnn":
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads = n
        net.opt.use_vulkan_compute = False
        net.load_param(os.path.join(path, "model.ncnn.param"))
        net.load_model(os.path.join(path, "model.ncnn.bin"))
        names_in, names_out = net.input_names(), net.output_names()
        mat = ncnn.Mat(x[0])

        def call():
            with net.create_extractor() as ex:
                ex.input(names_in[0], mat)
                ex.extract(names_out[0])
        return call
    if rt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        tflite = path if path.endswith(".tflite") else next(
            os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith("float32.tflite"))
        it = Interpreter(model_path=tflite, num_threads=n)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        xin = np.transpose(x, (0, 2, 3, 1)).copy() if list(inp["shape"][-1:]) == [3] else x

        def call():
            it.set_tensor(inp["index"], xin)
            it.invoke()
        return call
    raise ValueError(rt)


def main(args):
    tc._prepare(args)
    import torch

    torch.set_num_threads(args["threads"])  # the checkout's import may have changed it
    result = {"python": sys.version.split()[0], "torch": torch.__version__}
    result["env_set"] = tc._weights_only(args)
    tc._check_package(args)
    if args["kind"] == "yolov5":
        result["compat"] = tc._legacy_onnx_export(torch)
    plan, skipped = runtimes(args["runtimes"])
    result["runtimes"], result["skipped"] = plan, skipped
    cfg = {"n": args["threads"], "hw": (args["imgsz"], args["imgsz"])}
    rows, calls = [], []
    for i, spec in enumerate(args["models"]):
        stage(f"building {spec['label']} ({spec['scale']}) [{i + 1}/{len(args['models'])}]")
        row = dict(label=spec["label"], scale=spec["scale"], model=spec["model"], ms={}, errors={})
        rows.append(row)
        wrapper, model, row["params"], row["gflops"] = build(args, spec)
        torch.set_num_threads(args["threads"])
        for rt in plan:
            try:
                path = None
                if rt != "torch":
                    stage(f"exporting {spec['label']} ({spec['scale']}) to {rt}")
                    work = os.path.join(args["work"], f"{i}-{spec['label']}-{spec['scale']}")
                    os.makedirs(work, exist_ok=True)
                    path = export(args, wrapper, model, rt, work)
                    row.setdefault("files", {})[rt] = path
                torch.set_num_threads(args["threads"])
                calls.append((row, rt, runner(rt, path, model, cfg)))
            except Exception as exc:  # noqa: BLE001 (one runtime failing leaves the others measured)
                row["errors"][rt] = f"{type(exc).__name__}: {exc}"[:500]
    times = {(id(r), rt): [] for r, rt, _ in calls}
    for r, rt, call in calls:  # warm-up
        for _ in range(max(2, args["runs"] // 10)):
            call()
    for k in range(args["runs"]):
        stage(f"timing round {k + 1}/{args['runs']}")
        for r, rt, call in calls:  # stock and patched alternated within every round
            t0 = time.perf_counter()
            call()
            times[(id(r), rt)].append((time.perf_counter() - t0) * 1e3)
    for r, rt, _ in calls:
        r["ms"][rt] = statistics.median(times[(id(r), rt)])
    result["rows"] = rows
    return result


if __name__ == "__main__":
    try:
        tc._emit({"ok": True, **main(json.loads(sys.argv[1]))})
    except BaseException as exc:  # report any failure as data; the parent decides the exit code
        tc._emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()})
        sys.exit(1)
