"""Copy a stock checkpoint's neck and head into the patched model; runs in the user's interpreter (imports nothing
of mbpatch).

    python transfer_child.py '{"root": ..., "package": "ultralytics", "model": "DetectionModel", "yaml": "<abs yaml>",
                               "scale": "n", "nc": 80, "stock": "<STOCK.pt>", "out": "<file to write>"}'

The patched model is built from its yaml as the trainer builds it (the backbone loads its `--weights`). Its
layers after the backbone (model.model[1:]) are the stock model's last layers, in the same order (mbpatch keeps
the stock rows after the backbone stages); each pair of the same layer type gives every tensor whose name and
shape match. The result is saved as an Ultralytics checkpoint (`{"model": module}`), which
`YOLO(yaml).load(file)` reads and the trainer's rebuild keeps (`get_model(weights=...)` loads it by name and shape).
"""

import json
import sys
import traceback

MARKER = "@@MBPATCH-TRANSFER@@"


def _build(tasks, args):
    import yaml

    with open(args["yaml"], encoding="utf-8") as fh:
        d = yaml.safe_load(fh)
    d["scale"] = args["scale"]
    return getattr(tasks, args["model"])(d, nc=args["nc"], verbose=False)


def _load_stock(tasks, path):
    import torch

    if hasattr(tasks, "torch_safe_load"):  # the checkout's own loader (its module renames and checks)
        ckpt = tasks.torch_safe_load(path)[0]
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "model"):
        raise ValueError("not an Ultralytics checkpoint (no model module under 'model' or 'ema')")
    return model.float()


def main(args):
    sys.path.insert(0, args["root"])
    sys.dont_write_bytecode = True
    import importlib

    import torch

    tasks = importlib.import_module(args["package"] + ".nn.tasks")
    patched = _build(tasks, args)
    stock = _load_stock(tasks, args["stock"])
    ours, theirs = list(patched.model), list(stock.model)
    kept = len(ours) - 1  # every layer after the backbone module
    if len(theirs) <= kept:
        raise ValueError(f"the stock model has {len(theirs)} layers, fewer than the {kept} the patched model keeps after "
                         "its backbone: not the same family")
    offset = len(theirs) - kept
    layers, tensors, params, total_tensors = [], 0, 0, 0
    with torch.no_grad():
        for j in range(1, len(ours)):
            mine, src = ours[j], theirs[offset + j - 1]
            own = mine.state_dict()
            total_tensors += len(own)
            row = {"index": j, "stock_index": offset + j - 1, "type": type(mine).__name__, "tensors": len(own),
                   "transferred": 0}
            if type(mine).__name__ != type(src).__name__:
                row["why"] = f"stock layer is {type(src).__name__}"
                layers.append(row)
                continue
            given = src.state_dict()
            for name, t in own.items():
                if name in given and tuple(given[name].shape) == tuple(t.shape):
                    t.copy_(given[name].to(t.dtype))
                    row["transferred"] += 1
                    tensors += 1
                    params += t.numel()
            if row["transferred"] < row["tensors"]:
                row["why"] = "shapes differ (its inputs come from the new backbone, or another nc)"
            layers.append(row)
    ckpt = {"model": patched, "train_args": {}, "mbpatch_transfer": {"stock": args["stock"]}}
    torch.save(ckpt, args["out"])
    return {"tensors": tensors, "params": params, "neck_head_tensors": total_tensors,
            "layers_not_transferred": [r for r in layers if r["tensors"] and r["transferred"] == 0],
            "layers_partly_transferred": [r for r in layers if 0 < r["transferred"] < r["tensors"]],
            "layers": len(layers), "stock_layers": len(theirs), "out": args["out"]}


if __name__ == "__main__":
    try:
        out = {"ok": True, **main(json.loads(sys.argv[1]))}
    except BaseException as exc:  # reported as data; the parent writes the one line
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    sys.stdout.write("\n" + MARKER + json.dumps(out) + "\n")
