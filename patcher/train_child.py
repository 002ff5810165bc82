"""Train and reload the patched model with the checkout's own code, offline (export_child.py and bench_child.py
reuse its helpers).

Run as a script by the target interpreter (`--python`), which may not have mbpatch installed: this file
imports only the standard library, torch, the checkout's own package and what the checkout itself needs
(numpy, Pillow). It prints one JSON document after the marker on its last line of
stdout, whatever happens. Everything it writes goes under `args["work"]` (a temporary folder): the
generated dataset, the trainer's runs folder (`<work>/runs/train`), the exported file, the settings and
font folder Ultralytics and YOLOv5 use.

    python train_child.py '{"mode": "train" | "reload", "kind": "ultralytics" | "yolov5",
                            "root": ..., "package": ..., "model": "<yaml to load>", "work": "<tmp>", ...}'

Offline: Ultralytics' settings live in `<work>/config` with sync off (no analytics, no hub); the AMP check
only runs on CUDA; plots are off, so no font is fetched. YOLOv5 imports its plotting code at start and
fetches Arial.ttf there when the config folder lacks it: matplotlib's DejaVuSans is put there under that
name. YOLOv5's `check_requirements` (which pip-installs what is missing) and `check_git_status` are
replaced by no-ops in the `train` / `export` modules before they run.
"""

import csv
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
import traceback

MARKER = "@@MBPATCH-RESULT@@"
HERE = os.path.dirname(os.path.abspath(__file__))
NO_WO = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _emit(result):
    sys.stdout.write("\n" + MARKER + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def _prepare(args):
    """sys.path (checkout first, mbpatch's folder gone), config folder with a font, offline settings."""
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(HERE):
        sys.path.pop(0)
    sys.path.insert(0, os.path.abspath(args["root"]))
    sys.dont_write_bytecode = True
    sys.argv = sys.argv[:1]  # YOLOv5's parse_opt reads sys.argv
    config = os.path.join(args["work"], "config")
    os.makedirs(config, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dest = os.path.join(config, name)
        if not os.path.exists(dest):
            try:
                import matplotlib

                src = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
                shutil.copyfile(src, dest)
            except Exception:  # noqa: BLE001 (no matplotlib: plots are off anyway)
                pass
    os.environ.update(YOLO_CONFIG_DIR=config, YOLOV5_CONFIG_DIR=config, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False",
                      WANDB_MODE="disabled", COMET_MODE="disabled", MPLBACKEND="Agg", YOLO_VERBOSE="False")


def _read(root, rels):
    for rel in rels:
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                yield fh.read()
        except OSError:
            pass


def passes_weights_only_false(root, rels):
    """Whether the checkout's checkpoint loader says weights_only=False (`torch.load(..., weights_only=False)` or
    Ultralytics' `kwargs["weights_only"] = False`, 8.2+); without it torch >= 2.6 refuses its own checkpoints."""
    return any(re.search(_WEIGHTS_ONLY_FALSE, text) for text in _read(root, rels))


# YOLOv5 master's train.py, utils/general.py (strip_optimizer) and models/experimental.py (attempt_load) load
# through the installed Ultralytics' torch_load instead of torch.load
ULTRALYTICS_LOADER = "from ultralytics.utils.patches import torch_load"
_WEIGHTS_ONLY_FALSE = r"""weights_only["']?\]?\s*=\s*False"""


def loads_through_ultralytics(root, rels):
    """Whether the checkout's loader calls `ultralytics.utils.patches.torch_load` (YOLOv5 master)."""
    return any(ULTRALYTICS_LOADER in text and "torch_load(" in text.replace(ULTRALYTICS_LOADER, "")
               for text in _read(root, rels))


def ultralytics_loader_passes_false():
    """Whether the Ultralytics this interpreter would import has a torch_load that passes weights_only=False
    (None: no Ultralytics). Reads its source file; importing it would log and write settings."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "utils", "patches.py")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return False
    return "def torch_load" in text and re.search(_WEIGHTS_ONLY_FALSE, text) is not None


def calls_np_trapz(root, rels):
    """Whether the checkout's metrics code calls `np.trapz` (removed in numpy 2.4)."""
    return any("np.trapz(" in text for text in _read(root, rels))


def _weights_only(args):
    """torch >= 2.6 loads with weights_only=True; checkouts that never say weights_only=False cannot load
    their own checkpoints then. Set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for them, and say so."""
    import torch

    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6) or os.environ.get(NO_WO) == "1":
        return None
    if passes_weights_only_false(args["root"], args.get("loader_files") or []):
        return None
    if loads_through_ultralytics(args["root"], args.get("loader_files") or []) and ultralytics_loader_passes_false():
        return None
    os.environ[NO_WO] = "1"
    return {NO_WO: "1", "why": f"torch {torch.__version__} loads checkpoints with weights_only=True and this checkout's "
                                "loader does not pass weights_only=False, so it could not read its own best.pt"}


def _numpy_trapz(args):
    """numpy 2.4 removed `np.trapz` (deprecated since 2.0 for `np.trapezoid`), which the validation code of
    older checkouts calls (Ultralytics up to 8.2.x and YOLOv5 v7.0 `utils/metrics.py`). Alias it for this
    check and say so: the user's own training needs the same alias, numpy < 2.4 or a newer checkout."""
    import numpy as np

    if hasattr(np, "trapz") or not hasattr(np, "trapezoid"):
        return None
    if not calls_np_trapz(args["root"], args.get("metrics_files") or []):
        return None
    np.trapz = np.trapezoid
    return {"numpy.trapz": "numpy.trapezoid",
            "why": f"numpy {np.__version__} has no np.trapz, which this checkout's validation (utils/metrics.py) calls"}


def _dataset(args):
    spec = importlib.util.spec_from_file_location("mbpatch_datasets", os.path.join(HERE, "datasets.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t0 = time.perf_counter()
    data = mod.make(args["task"], os.path.join(args["work"], "data"), n_train=args.get("n_train", 16),
                    n_val=args.get("n_val", 8), size=max(args["imgsz"], 64), seed=0)
    return data, time.perf_counter() - t0


def _results_csv(save_dir):
    """The last row of the trainer's results.csv (both trainers write one per epoch), keys stripped."""
    path = os.path.join(save_dir, "results.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    out = {}
    for k, v in rows[-1].items():
        try:
            out[(k or "").strip()] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _finite(values):
    return bool(values) and all(isinstance(v, float) and math.isfinite(v) for v in values)


def _summarise(result, row):
    losses = {k: v for k, v in (row or {}).items() if "loss" in k and k.startswith("train/")}
    metrics = {k: v for k, v in (row or {}).items() if k.startswith("metrics/")}
    result["losses"] = losses
    result["loss_finite"] = _finite(list(losses.values()))
    result["metrics"] = metrics
    result["metrics_computed"] = _finite(list(metrics.values()))


def _first_tensor(out):
    """The inference output: the first tensor, depth first (Detect gives (y, x); Segment ((y, proto), x); dicts too)."""
    if hasattr(out, "shape"):
        return out
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


def _check_package(args):
    pkg = importlib.import_module(args["package"])
    where = os.path.dirname(os.path.abspath(pkg.__file__))
    expected = os.path.join(os.path.abspath(args["root"]), *args["package"].split("."))
    if os.path.normcase(where) != os.path.normcase(expected):
        raise RuntimeError(f"`import {args['package']}` loaded {where}, not the checkout's {expected}")
    return pkg


# --- Ultralytics ---------------------------------------------------------------------------------------------


def _ultralytics_model(args):
    _check_package(args)
    ul = importlib.import_module(args["package"])
    try:  # no analytics, no hub calls; the settings file lives in <work>/config
        from ultralytics.utils import SETTINGS  # noqa: F401 (the checkout is first on sys.path)

        SETTINGS.update(sync=False)
    except Exception:  # noqa: BLE001 (old releases name things differently; YOLO_OFFLINE covers the rest)
        pass
    cls = ul.RTDETR if args.get("arch") == "rtdetr" else ul.YOLO
    model, folder = args["model"], os.path.dirname(os.path.abspath(args["model"]))
    # Ultralytics finds yolov8n.yaml as yolov8.yaml by deleting the first "<digit><n|s|m|l|x>" of the WHOLE path:
    # in a folder such as /tmp/bench-f1n3/ or /data/v5s/ it deletes a letter of the folder instead. Load it by
    # its name from its own folder then.
    here = os.getcwd()
    if re.search(r"\d[nslmx]", folder):
        os.chdir(folder)
        model = os.path.basename(model)
    try:
        return cls(model) if args.get("task") in (None, "detect") or cls is ul.RTDETR else cls(model, task=args["task"])
    finally:
        os.chdir(here)


def train_ultralytics(args, result):
    model = _ultralytics_model(args)
    data, result["dataset_s"] = _dataset(args)
    result["data"] = data
    project = os.path.join(args["work"], "runs")
    t0 = time.perf_counter()
    model.train(data=data, epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"], workers=0, device="cpu",
                project=project, name="train", exist_ok=True, plots=False, amp=False, val=True, verbose=False,
                seed=0, deterministic=False)
    result["train_s"] = time.perf_counter() - t0
    trainer = model.trainer
    result["save_dir"] = str(trainer.save_dir)
    result["best"] = str(trainer.best) if os.path.isfile(str(trainer.best)) else None
    _summarise(result, _results_csv(str(trainer.save_dir)))
    tloss = getattr(trainer, "tloss", None)
    import torch

    if isinstance(tloss, torch.Tensor):
        result["loss_finite"] = result["loss_finite"] and bool(torch.isfinite(torch.as_tensor(tloss)).all())
    final = {k: float(v) for k, v in (getattr(trainer, "metrics", None) or {}).items() if isinstance(v, (int, float))}
    result["final_metrics"] = final  # what the trainer's final validation of best.pt computed
    result["metrics_computed"] = result["metrics_computed"] and _finite([v for k, v in final.items() if k.startswith("metrics/")])


def reload_ultralytics(args, result):
    _check_package(args)
    import torch

    tasks = importlib.import_module(args["package"] + ".nn.tasks")
    load = getattr(tasks, "load_checkpoint", None) or tasks.attempt_load_one_weight  # renamed in 8.4
    loaded = load(args["best"], device="cpu")
    model, ckpt = loaded if isinstance(loaded, tuple) else (loaded, None)
    result["loader"] = f"{tasks.__name__}.{load.__name__}"
    model = model.float().eval()
    result["class"] = type(model).__name__
    result["params"] = sum(p.numel() for p in model.parameters())
    result["epoch"] = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    with torch.no_grad():
        out = model(torch.zeros(1, 3, args["imgsz"], args["imgsz"]))
    first = _first_tensor(out)
    result["output"] = list(first.shape) if first is not None else type(out).__name__
    result["output_finite"] = bool(torch.isfinite(first).all()) if first is not None else None


# --- YOLOv5 --------------------------------------------------------------------------------------------------


def _yolov5_module(args, name):
    prefix = args["package"][: -len("models")]  # "" (git clone) or "yolov5." (PyPI)
    mod = importlib.import_module(prefix + name)
    for fn in ("check_requirements", "check_git_status"):  # they pip-install and fetch from GitHub
        if hasattr(mod, fn):
            setattr(mod, fn, lambda *a, **k: None)
    return mod, prefix


def train_yolov5(args, result):
    _check_package(args)
    data, result["dataset_s"] = _dataset(args)
    result["data"] = data
    train, _ = _yolov5_module(args, "train")
    project = os.path.join(args["work"], "runs")
    t0 = time.perf_counter()
    opt = train.run(data=data, cfg=args["model"], weights="", imgsz=args["imgsz"], batch_size=args["batch"],
                    epochs=args["epochs"], workers=0, device="cpu", project=project, name="train", exist_ok=True,
                    noplots=True)
    result["train_s"] = time.perf_counter() - t0
    save_dir = str(getattr(opt, "save_dir", os.path.join(project, "train")))
    result["save_dir"] = save_dir
    best = os.path.join(save_dir, "weights", "best.pt")
    result["best"] = best if os.path.isfile(best) else None
    _summarise(result, _results_csv(save_dir))


def _yolov5_load(args, path):
    exp, _ = _yolov5_module(args, "models.experimental")
    return exp.attempt_load(path, device="cpu", fuse=False)


def reload_yolov5(args, result):
    _check_package(args)
    import torch

    model = _yolov5_load(args, args["best"]).float().eval()
    result["class"] = type(model).__name__
    result["params"] = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 3, args["imgsz"], args["imgsz"]))
    first = _first_tensor(out)
    result["output"] = list(first.shape)
    result["output_finite"] = bool(torch.isfinite(first).all())


def _legacy_onnx_export(torch):
    """torch >= 2.9's `torch.onnx.export` defaults to the dynamo exporter (which needs onnxscript); exporters
    written before it (YOLOv5 v7.0's export.py) do not pass `dynamo=False`. Default it to False for this run
    when the caller says nothing, and say so."""
    import inspect

    fn = torch.onnx.export
    if "dynamo" not in inspect.signature(fn).parameters:
        return None

    def export(*a, **k):
        k.setdefault("dynamo", False)
        return fn(*a, **k)

    torch.onnx.export = export
    return {"torch.onnx.export": "dynamo=False",
            "why": f"torch {torch.__version__} exports with the dynamo exporter by default and this checkout's exporter "
                   "does not choose; the TorchScript exporter it was written for is used"}


def args_tol(scale, rtol=1e-4):
    """Tolerance: `rtol` (1e-4) relative to the largest output value (boxes are in pixels, scores in 0..1), at least rtol."""
    return rtol * max(1.0, scale)


SCORE_TOL = 1e-4


def same_detections(out, ref, rtol=1e-4, score_tol=SCORE_TOL):
    """Compare two (batch, k, 4 box + score + class [+ more]) top-k outputs as sets of detections.

    The rows are the k best (query, class) pairs in score order; two runs whose numbers differ in the last bits
    can order near-equal scores differently, and can keep a different pair where several tie at the k-th score.
    So: the sorted scores must agree (SCORE_TOL), and every torch detection scoring clearly above the k-th
    score (by more than SCORE_TOL) must have an ONNX row of the same class whose score agrees within SCORE_TOL
    and whose other columns agree within 1e-4 x max(1, max |column|). Rows at the k-th score are tied with
    detections that were not kept, so which of them is kept is not a property of the model; they are counted
    as "at the top-k boundary" and not matched. Formats that compute in lower precision pass a looser `rtol` and
    `score_tol` (export.py's table).
    """
    import numpy as np

    rest = [c for c in range(ref.shape[-1]) if c not in (4, 5)]
    scale = float(np.abs(ref[..., rest]).max()) if ref.size else 0.0
    tol = args_tol(scale, rtol)
    worst, compared, matched, boundary, score_diff = 0.0, 0, 0, 0, 0.0
    for o, r in zip(out, ref):
        score_diff = max(score_diff, float(np.abs(np.sort(o[:, 4]) - np.sort(r[:, 4])).max()))
        floor = float(r[:, 4].min())
        for row in r:
            if row[4] <= floor + score_tol:
                boundary += 1
                continue
            compared += 1
            same = o[(o[:, 5] == row[5]) & (np.abs(o[:, 4] - row[4]) <= score_tol)]
            best = float(np.abs(same[:, rest] - row[rest]).max(axis=1).min()) if len(same) else float("inf")
            worst = max(worst, best)
            matched += best <= tol
    return {"max_abs_diff": worst if compared else 0.0, "ref_max_abs": scale, "atol": tol,
            "score_max_diff": score_diff, "score_atol": score_tol, "compared": compared, "matched": matched,
            "at_boundary": boundary, "equal": matched == compared and score_diff <= score_tol}


MODES = {
    ("ultralytics", "train"): train_ultralytics, ("ultralytics", "reload"): reload_ultralytics,
    ("yolov5", "train"): train_yolov5, ("yolov5", "reload"): reload_yolov5,
}


def main(args):
    _prepare(args)
    import torch

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    result = {"python": sys.version.split()[0], "torch": torch.__version__, "mode": args["mode"]}
    result["env_set"] = _weights_only(args)
    result["compat"] = _numpy_trapz(args)
    t0 = time.perf_counter()
    MODES[(args["kind"], args["mode"])](args, result)
    result["wall_s"] = time.perf_counter() - t0
    return result


if __name__ == "__main__":
    try:
        _emit({"ok": True, **main(json.loads(sys.argv[1]))})
    except BaseException as exc:  # report any failure as data; the parent decides the exit code
        _emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()})
        sys.exit(1)
