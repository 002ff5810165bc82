"""Count parameters and GFLOPs at 640 of backbones alone, without building a detector (`mbpatch list --arch`).

Run as a script (standard library, torch, yaml, and Ultralytics for the stock rows):

    python sizes_child.py '{"root": null, "arch": "yolov8", "backbones": {"repvit_m1": ["<template.py>", "RepViTM1"]}}'

- a catalogue backbone: its template class built alone (no weights) from the template file;
- the stock backbone: the rows of the `backbone:` section of the stock yaml of the arch at each scale, built by
  Ultralytics' own `parse_model` (of the checkout at `root` when given, else the installed package).
  YOLOv5's stock backbone is Ultralytics' `yolov5.yaml` one (the v6.0+ backbone: Conv stem, C3, SPPF).
GFLOPs: thop at 1x3x640x640, 2 x MACs (as Ultralytics counts); null without thop. Prints one JSON line
after the marker.
"""

import importlib.util
import json
import os
import sys
import traceback

MARKER = "@@MBPATCH-SIZES@@"
STOCK = {"yolov8": "v8/yolov8.yaml", "yolo11": "11/yolo11.yaml", "yolo12": "12/yolo12.yaml", "yolo26": "26/yolo26.yaml",
         "rtdetr": "rt-detr/rtdetr-l.yaml", "yolov5": "v5/yolov5.yaml"}


def _size(model):
    import torch

    model.eval()
    params = sum(p.numel() for p in model.parameters())
    try:
        import thop
    except ImportError:
        return params, None
    with torch.no_grad():
        macs = thop.profile(model, inputs=(torch.zeros(1, 3, 640, 640),), verbose=False)[0]
    return params, round(macs * 2 / 1e9, 3)


def backbone_sizes(backbones):
    out = {}
    modules = {}
    for bid, (path, cls) in backbones.items():
        mod = modules.get(path)
        if mod is None:
            spec = importlib.util.spec_from_file_location(f"mbpatch_sizes_{len(modules)}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            modules[path] = mod
        params, gflops = _size(getattr(mod, cls)())
        out[bid] = {"params": params, "gflops": gflops}
    return out


def stock_sizes(arch, root):
    import yaml

    if root:
        sys.path.insert(0, root)
    import ultralytics
    from ultralytics.nn import tasks

    path = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "models", STOCK[arch])
    with open(path, encoding="utf-8") as fh:
        d = yaml.safe_load(fh)
    if any(row[0] != -1 for row in d["backbone"]):
        raise RuntimeError(f"{path}: a backbone row reads an earlier layer; cannot build it alone")
    out = {"source": f"ultralytics {ultralytics.__version__} {STOCK[arch]}", "scales": {}}
    for scale in (d.get("scales") or {"": None}):
        cfg = dict(d, head=[], scale=scale) if scale else dict(d, head=[])
        layers = tasks.parse_model(cfg, ch=3, verbose=False)[0]
        params, gflops = _size(layers)  # an nn.Sequential: every backbone row reads the previous one
        out["scales"][scale or "-"] = {"params": params, "gflops": gflops}
    return out


def main(args):
    import torch

    torch.manual_seed(0)
    result = {"torch": torch.__version__, "backbones": backbone_sizes(args.get("backbones") or {})}
    if args.get("arch"):
        result["stock"] = stock_sizes(args["arch"], args.get("root"))
    return result


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    try:
        out = {"ok": True, **main(json.loads(sys.argv[1]))}
    except BaseException as exc:  # reported as data; the parent says what could not be computed
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    sys.stdout.write("\n" + MARKER + json.dumps(out) + "\n")
