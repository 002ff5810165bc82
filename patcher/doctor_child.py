"""Probe the environment of the interpreter `mbpatch doctor --python` names.

Run as a script by that interpreter, which may not have mbpatch installed: standard library only, plus
whatever it finds. Prints one JSON document after the marker on its last line of stdout, whatever happens.

    python doctor_child.py '{"root": ..., "module": "ultralytics", "expected": "<root>/ultralytics",
                             "target": "ultralytics.nn.tasks", "names": ["MobileNetV2"]}'

1. shadowing first, before anything is imported: where `import <module>` resolves from a neutral folder
   with the interpreter's own sys.path (what a training script elsewhere would load);
2. Python, numpy, torch, torchvision (and whether `torchvision.ops.nms` runs: a torchvision built for
   another torch fails there), thop / ultralytics-thop;
3. importing the checkout itself (`<root>` first on sys.path), which is what training from the checkout does.
"""

import json
import os
import sys
import traceback

MARKER = "@@MBPATCH-DOCTOR@@"


def _emit(result):
    sys.stdout.write("\n" + MARKER + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def _err(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _dist(name):
    """(version, location, editable) of an installed distribution, or None."""
    from importlib import metadata

    try:
        d = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    editable = None
    try:
        direct = json.loads(d.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            editable = direct.get("url", "").replace("file://", "")
    except (ValueError, OSError):
        pass
    return {"name": name, "version": d.version, "editable": editable}


def shadowing(module, expected):
    import importlib.util

    out = {"module": module, "expected": expected}
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        spec, out["error"] = None, _err(exc)
    if spec is None:
        out["found"] = None
    else:
        locs = list(spec.submodule_search_locations or [])
        where = locs[0] if locs else os.path.dirname(spec.origin or "")
        out["found"] = os.path.realpath(where)
        out["is_checkout"] = os.path.normcase(out["found"]) == os.path.normcase(os.path.realpath(expected))
    out["distribution"] = _dist(module) if module in ("ultralytics", "yolov5") else None
    return out


def _import(name):
    import importlib

    try:
        mod = importlib.import_module(name)
        return {"ok": True, "version": str(getattr(mod, "__version__", "") or ""), "file": getattr(mod, "__file__", None)}, mod
    except BaseException as exc:  # noqa: B902 (a broken binary package can raise anything)
        return {"ok": False, "error": _err(exc)}, None


def packages():
    out = {"python": {"ok": True, "version": sys.version.split()[0], "executable": sys.executable}}
    out["numpy"], _ = _import("numpy")
    out["torch"], torch = _import("torch")
    if torch is not None:
        try:
            out["torch"]["cuda"] = bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001
            out["torch"]["cuda"] = False
    tv = _dist("torchvision")
    out["torchvision"], torchvision = _import("torchvision") if tv else ({"ok": False, "error": "not installed"}, None)
    if tv:
        out["torchvision"]["installed"] = tv["version"]
    if torchvision is not None and torch is not None:
        try:
            keep = torchvision.ops.nms(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([1.0]), 0.5)
            out["torchvision"]["nms"] = {"ok": int(keep.numel()) == 1}
        except BaseException as exc:  # noqa: B902
            out["torchvision"]["nms"] = {"ok": False, "error": _err(exc)}
    dists = [d for d in (_dist("ultralytics-thop"), _dist("thop")) if d]
    out["thop"], _ = _import("thop")
    out["thop"]["distributions"] = dists
    return out


def checkout(root, target, expected, names):
    sys.path.insert(0, root)
    out, mod = _import(target)
    if mod is not None:
        where = os.path.realpath(os.path.dirname(mod.__file__ or ""))
        out["loaded_from_checkout"] = where.startswith(os.path.realpath(expected))
        out["missing_names"] = [n for n in names if not hasattr(mod, n)]
    return out


def main(args):
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(os.path.dirname(__file__)):
        sys.path.pop(0)  # this script's folder (mbpatch's own) is not on a training script's path
    result = {"shadowing": shadowing(args["module"], args["expected"])}
    result.update(packages())
    result["checkout_import"] = checkout(args["root"], args["target"], args["expected"], args.get("names", []))
    return result


if __name__ == "__main__":
    try:
        _emit({"ok": True, **main(json.loads(sys.argv[1]))})
    except BaseException as exc:  # report any failure as data
        _emit({"ok": False, "error": _err(exc), "traceback": traceback.format_exc()})
        sys.exit(1)
