"""Build the stock and the patched model inside the user's checkout and measure them.

Run as a script by the target interpreter (`--python`), which may not have mbpatch installed: this file
imports only the standard library, torch, yaml and the checkout's own package. It prints one JSON document
on its last line of stdout (after the marker), whatever happens.

    python verify_child.py '{"root": ..., "package": "ultralytics", "model": "DetectionModel",
                             "stock": "<abs yaml>", "patched": "<abs yaml>", "scale": "n", "nc": 80}'
"""

import json
import sys
import time
import traceback

MARKER = "@@MBPATCH-RESULT@@"


def _stage(text):
    """Tell mbpatch which stage begins (it shows it while waiting): one line on stderr."""
    sys.stderr.write(f"@@MBPATCH-STAGE@@ {text}\n")
    sys.stderr.flush()


def _emit(result):
    sys.stdout.write("\n" + MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def _load_yaml(path, scale, scaled):
    import yaml

    with open(path, encoding="utf-8") as fh:
        d = yaml.safe_load(fh)
    if scaled:  # as Ultralytics does from the file name; a scale the yaml lacks means its first one
        d["scale"] = scale if scale in (d.get("scales") or {}) else next(iter(d.get("scales") or {"": 0}))
    d["yaml_file"] = path
    return d


def _depth(d, scale):
    if d.get("scales"):
        return d["scales"][d["scale"]][0]
    return d.get("depth_multiple", 1.0)


def _gflops(model, shape):
    """GFLOPs at one input shape, counted by thop as Ultralytics does (2 x MACs), or None without thop."""
    import torch

    try:
        import thop
    except ImportError:
        return None, None
    x = torch.zeros(shape)
    macs = thop.profile(model, inputs=(x,), verbose=False)[0]
    for m in model.modules():  # old thop leaves its counters behind
        for name in ("total_ops", "total_params"):
            if name in getattr(m, "_buffers", {}):
                del m._buffers[name]
    return macs * 2 / 1e9, getattr(thop, "__version__", "unknown")


def _shapes(out):
    import torch

    if isinstance(out, torch.Tensor):
        return list(out.shape)
    if isinstance(out, (list, tuple)):
        return [_shapes(o) for o in out]
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return type(out).__name__


def _measure(cls, cfg, scale, nc, summary):
    _stage(f"building the {'patched' if summary else 'stock'} model")
    t0 = time.perf_counter()
    model = cls(cfg=cfg, nc=nc, verbose=False)
    _stage(f"{'patched' if summary else 'stock'} model: GFLOPs at 640 and forward passes")
    info = _run(model, time.perf_counter() - t0)
    if summary:
        info["summary"] = _summary(model, cfg["backbone"] + cfg["head"], _depth(cfg, scale))
        info["gradient"] = _gradient_check(model, len(cfg["backbone"]))
    return info


# --- tasks: the model class per task, the checkout's own task guess, train-mode outputs compared with stock ---


def _check_task(tasks, cfg, task):
    """The task the checkout's own `guess_model_task` reads from the yaml (what YOLO(...) will train), or None."""
    guess = getattr(tasks, "guess_model_task", None)
    if guess is None:
        return None
    got = guess(cfg)
    if got is None:  # no rule for this head (RTDETRDecoder: RTDETR(...) sets the task itself)
        return None
    if got != task:
        raise RuntimeError(f"the checkout guesses task '{got}' for {cfg.get('yaml_file')}, not '{task}'")
    return got


def _train_forward(model, info):
    """One train-mode forward at batch 2, 640x480 (what a training step feeds), then back to eval mode."""
    import torch

    model.train()
    try:
        with torch.no_grad():  # train-mode outputs; the gradient check is separate (and smaller)
            out = _shapes(model(torch.zeros(2, 3, 480, 640)))
    except TypeError:
        # RT-DETR's decoder of older releases reads the labels (`batch["gt_groups"]`) in train mode; a training
        # step always passes them, a bare forward cannot: the stock model answers the same, so both are compared
        if type(model.model[-1]).__name__ != "RTDETRDecoder":
            raise
        out = "needs the batch's labels in train mode"
    finally:
        model.eval()
    info["forward"]["train 2x640x480"] = out


def _skeleton(shapes):
    """The nesting of an output without its sizes: a tensor's shape (a list of ints) becomes its rank."""
    if isinstance(shapes, list) and all(isinstance(v, int) for v in shapes):
        return f"tensor{len(shapes)}"
    if isinstance(shapes, list):
        return [_skeleton(v) for v in shapes]
    if isinstance(shapes, dict):
        return {k: _skeleton(v) for k, v in shapes.items()}
    return shapes


def _same_outputs(result):
    """Stock and patched of the same family, task and scale must give eval outputs of the same structure and shapes
    (boxes, masks, keypoints, angles, class scores) and train outputs of the same structure (a lighter neck, such
    as rtdetr's --head light with 3 decoder layers, changes train-mode sizes only)."""
    s, p = result["stock"]["forward"], result["patched"]["forward"]
    loose = [k for k in s if k.startswith("train")]
    diff = [k for k in s if (_skeleton(s[k]) != _skeleton(p.get(k)) if k in loose else s[k] != p.get(k))]
    result["outputs_match"] = not diff
    if diff:  # reported with both models' numbers, as a failed verification
        result["ok"] = False
        result["error"] = (f"the patched model's outputs differ from the stock model's at {', '.join(diff)}: "
                           f"stock {s[diff[0]]}, patched {p.get(diff[0])}")


def _run(model, build_s, extra=None):
    """Size, GFLOPs at 640 and output shapes of a built model, in eval mode: 640x640, 640x480 and `extra`."""
    import torch

    model.eval()
    info = {
        "layers": len(list(model.modules())),
        "params": sum(p.numel() for p in model.parameters()),
        "build_s": build_s,
    }
    t0 = time.perf_counter()
    captured = {}
    hook = model.register_forward_hook(lambda mod, inp, out: captured.__setitem__("out", _shapes(out)))
    with torch.no_grad():
        # the 640x640 pass is the one thop profiles: its output shape is taken by the hook
        gflops, thop_version = _gflops(model, (1, 3, 640, 640))
        if gflops is None:
            model(torch.zeros(1, 3, 640, 640))
        info["gflops"], info["thop"] = gflops, thop_version
        info["forward"] = {"640x640": captured["out"]}
        hook.remove()
        info["forward"]["640x480"] = _shapes(model(torch.zeros(1, 3, 480, 640)))
        for name, shape in (extra or {}).items():
            info["forward"][name] = _shapes(model(torch.zeros(shape)))
    _train_forward(model, info)
    info["forward_s"] = time.perf_counter() - t0
    return info


def _gradient_check(model, n_backbone):
    """One backward pass (train mode; a 1x3x160x160 input, as RT-DETR needs 300 anchors): every parameter of
    the backbone layers (the yaml's first `n_backbone` rows) must receive a gradient, or DDP without
    `find_unused_parameters` stops and those parameters never train. The head alone runs in eval mode:
    RT-DETR's training decoder wants the batch's labels. Returns {"params": n, "unused": [names]}."""
    import torch

    model.train()
    model.model[-1].eval()
    model.zero_grad(set_to_none=True)
    out = model(torch.rand(1, 3, 160, 160))
    leaves = []

    def collect(o):
        if isinstance(o, torch.Tensor):
            if o.requires_grad and o.is_floating_point():
                leaves.append(o.float().mean())
        elif isinstance(o, (list, tuple)):
            for v in o:
                collect(v)
        elif isinstance(o, dict):
            for v in o.values():
                collect(v)

    collect(out)
    if not leaves:  # a head whose eval output carries no gradient (an argmax map): the head in train mode too
        model.model[-1].train()
        collect(model(torch.rand(1, 3, 160, 160)))
    if leaves:
        sum(leaves).backward()
    layers = enumerate(model.model[:n_backbone])
    names = [(f"model.{i}.{n}", p) for i, layer in layers for n, p in layer.named_parameters()]
    unused = [n for n, p in names if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"params": len(names), "unused": unused}


def _gradient_verdict(result):
    """Turn a failed gradient check of the patched model into a failed verification naming the parameters."""
    unused = result["patched"]["gradient"]["unused"]
    if unused:
        result["ok"] = False
        result["error"] = (f"{len(unused)} backbone parameter(s) got no gradient in a training step (DDP "
                           f"without find_unused_parameters fails; they never train): {', '.join(unused)}")
    return result


def _summary(model, rows, depth):
    """The layer table Ultralytics and YOLOv5 print: index, from, n (after the depth gain), params, module, args."""
    return [
        {
            "i": int(m.i),
            "from": m.f,
            "n": (max(round(r[1] * depth), 1) if r[1] > 1 else r[1]),
            "params": sum(p.numel() for p in m.parameters()),
            "module": str(getattr(m, "type", type(m).__name__)),
            "args": str(r[3]),
        }
        for m, r in zip(model.model, rows)
    ]


def _summary_lines(prefix):
    """Collect the summary lines YOLOv5's own `model_info` logs ("... summary: N layers, ... GFLOPs")."""
    import logging

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            try:
                msg = record.getMessage()
            except Exception:  # a record we cannot format is not ours
                return
            if "summary" in msg.lower() and "layers" in msg:
                lines.append(msg.strip())

    logger = getattr(sys.modules.get(prefix + "utils.torch_utils"), "LOGGER", None)
    if isinstance(logger, logging.Logger):
        logger.addHandler(Keep())
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    return lines


def _measure_yolov5(cls, path, nc, summary, lines):
    _stage(f"building the {'patched' if summary else 'stock'} model")
    t0 = time.perf_counter()
    seen = len(lines)
    model = cls(path, ch=3, nc=nc)
    _stage(f"{'patched' if summary else 'stock'} model: GFLOPs at 640 and forward passes")
    # YOLOv5 validation batches are rect (pad 0.5): non-square, long side 672 at imgsz 640
    info = _run(model, time.perf_counter() - t0, extra={"2x672x512": (2, 3, 672, 512)})
    info["yolov5_summary"] = lines[-1] if len(lines) > seen else None
    if summary:
        d = model.yaml
        info["summary"] = _summary(model, d["backbone"] + d["head"], d.get("depth_multiple", 1.0))
        info["gradient"] = _gradient_check(model, len(d["backbone"]))
    return info


def main_yolov5(args):
    """YOLOv5: `<package>` is `models` (git clone) or `yolov5.models` (PyPI); the model class is `Model`."""
    import importlib
    import os

    root = os.path.abspath(args["root"])
    sys.path.insert(0, root)
    sys.dont_write_bytecode = True
    package = args["package"]
    _stage("importing the checkout")
    threads = _threads()
    yolo = importlib.import_module(package + ".yolo")
    _restore_threads(threads)
    where = os.path.abspath(yolo.__file__)
    expected = os.path.join(root, *package.split("."), "yolo.py")
    if os.path.normcase(where) != os.path.normcase(expected):
        raise RuntimeError(f"`import {package}.yolo` loaded {where}, not the checkout's {expected}")
    prefix = package[: -len("models")]
    lines = _summary_lines(prefix)
    cls = getattr(yolo, args["model"])
    result = {"python": sys.version.split()[0], "package_file": where}
    import torch

    torch.manual_seed(0)
    result["torch"] = torch.__version__
    result["stock"] = _measure_yolov5(cls, args["stock"], args["nc"], False, lines)
    result["patched"] = _measure_yolov5(cls, args["patched"], args["nc"], True, lines)
    _same_outputs(result)
    return _gradient_verdict(result)


def main(args):
    if args.get("kind") == "yolov5":
        return main_yolov5(args)
    root = args["root"]
    sys.path.insert(0, root)
    sys.dont_write_bytecode = True
    import importlib
    import os

    _stage("importing the checkout")
    threads = _threads()
    pkg = importlib.import_module(args["package"])
    where = os.path.dirname(os.path.abspath(pkg.__file__))
    expected = os.path.join(os.path.abspath(root), args["package"])
    if os.path.normcase(where) != os.path.normcase(expected):
        raise RuntimeError(f"`import {args['package']}` loaded {where}, not the checkout {expected}")
    tasks = importlib.import_module(args["package"] + ".nn.tasks")
    _restore_threads(threads)
    cls = getattr(tasks, args["model"])
    result = {"python": sys.version.split()[0], "package_file": where}
    import torch

    torch.manual_seed(0)
    result["torch"] = torch.__version__
    task = args.get("task", "detect")
    stock, patched = (_load_yaml(args[k], args["scale"], args["scaled"]) for k in ("stock", "patched"))
    result["task"] = _check_task(tasks, dict(patched), task) or task
    result["stock"] = _measure(cls, stock, args["scale"], args["nc"], False)
    result["patched"] = _measure(cls, patched, args["scale"], args["nc"], True)
    _same_outputs(result)
    return _gradient_verdict(result)


def _threads():
    """torch's own default thread count, read before the checkout is imported: Ultralytics and YOLOv5 set
    OMP_NUM_THREADS / torch's threads to cores - 1 for their workers at import (1 on a 2-core machine), which
    would make verification single-threaded. Restored after the import (see main / main_yolov5)."""
    try:
        import torch
    except ImportError:  # reported by the checkout's own import
        return None
    return torch.get_num_threads()


def _restore_threads(n):
    if n:
        import torch

        torch.set_num_threads(n)


if __name__ == "__main__":
    try:
        _emit({"ok": True, **main(json.loads(sys.argv[1]))})
    except BaseException as exc:  # report any failure as data; the parent decides the exit code
        _emit({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        sys.exit(1)
