"""The recipe list of `mbpatch list`, read from the recipe sources with the stdlib `ast`, without importing them.

The recipes import libcst (a third of a second or more); `list` only needs each recipe's `name` and `step`,
which every recipe class states as string literals, the order of `RECIPES = [Cls(), ...]` and the `ARCHS`
tuple in the kind's `__init__.py`. Anything not written that way is read by importing the package instead.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def kind_recipes(kind: str):
    """The recipe package of a checkout kind (`RECIPES`, `ARCHS`, ...); importing it imports libcst."""
    if kind == "yolov5":
        from .recipes import yolov5 as module
    else:
        from .recipes import ultralytics as module
    return module


def _recipes_dir() -> Path:
    from . import recipes  # the package itself is cheap: libcst is imported where a recipe parses

    return Path(recipes.__file__).resolve().parent


def _class_strings(path: Path, cls: str) -> Optional[Dict[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out = {}
            for st in node.body:
                target = st.targets[0] if isinstance(st, ast.Assign) and len(st.targets) == 1 else getattr(st, "target", None)
                value = getattr(st, "value", None)
                if isinstance(target, ast.Name) and target.id in ("name", "step") and isinstance(value, ast.Constant) \
                        and isinstance(value.value, str):
                    out[target.id] = value.value
            return out if len(out) == 2 else None
    return None


def read(kind: str) -> Optional[Tuple[List[Dict[str, str]], List[str]]]:
    """([{name, step}] in RECIPES order, ARCHS) of recipes/<kind>/, or None when not statically readable."""
    folder = _recipes_dir() / kind
    try:
        tree = ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    where: Dict[str, Path] = {}
    order: Optional[List[str]] = None
    archs: Optional[List[str]] = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level in (1, 2):
            base = folder if node.level == 1 else folder.parent
            for alias in node.names:
                where[alias.asname or alias.name] = base / (node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "RECIPES" and isinstance(node.value, ast.List):
                calls = node.value.elts
                if not all(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and not c.args and not c.keywords
                           for c in calls):
                    return None
                order = [c.func.id for c in calls]
            elif name == "ARCHS":
                try:
                    archs = list(ast.literal_eval(node.value))
                except ValueError:
                    return None
    if order is None or archs is None:
        return None
    rows = []
    for cls in order:
        path = where.get(cls)
        strings = _class_strings(path, cls) if path is not None and path.is_file() else None
        if strings is None:
            return None
        rows.append(strings)
    return rows, archs


def recipes_and_archs() -> Tuple[Dict[str, List[Dict[str, str]]], Dict[str, List[str]]]:
    recipes, archs = {}, {}
    for kind in ("ultralytics", "yolov5"):
        got = read(kind)
        if got is None:  # written some other way: import it (slower, same answer)
            import importlib

            mod = importlib.import_module(f"{__package__}.recipes.{kind}")
            got = [dict(name=r.name, step=r.step) for r in mod.RECIPES], list(mod.ARCHS)
        recipes[kind], archs[kind] = got
    return recipes, archs
