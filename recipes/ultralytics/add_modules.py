"""add_modules — put the backbone source into the checkout (tutorial step "create nn/AddModules").

Targets (new files): `ultralytics/nn/AddModules/<family>.py` (the template, copied verbatim under a one-line
header) and `ultralytics/nn/AddModules/__init__.py`, which imports the backbone's names from it. Every
release from 8.0.0 has `ultralytics/nn/`.

With `--weights FILE`: a line `<Class>.default_weights = "<FILE>"` in `AddModules/__init__.py`, so every
build of the model loads that timm checkpoint (the templates read `default_weights` when no `weights`
argument is given); a later apply with another file replaces the path.

Already applied: `AddModules/__init__.py` already imports every name of the backbone (from our file, or from
a file the user wrote following a tutorial: theirs is kept, never overwritten).
Refused: `AddModules/<family>.py` exists, is not mbpatch's and does not define the backbone's names.

The user's own class of the same name (a tutorial's `AddModules/MobileNetV2.py` with `from .MobileNetV2
import *`, or `from .mine import MobileNetV2`): writing ours would replace theirs for the yaml name, so the
recipe refuses (the RecipeError has `users_own` set, which doctor reads as "applied: your own class")
unless `--replace-existing`; then mbpatch's source goes to `AddModules/mbpatch_<family>.py`, never to a file
whose name differs from theirs only in case (`MobileNetV2.py` / `mobilenetv2.py` are one file on macOS and
Windows), and its import line comes last in `__init__.py`, so it wins. Their file is left as it is.

VALID (after): AddModules/__init__.py contains `from .mobilenetv4 import MobileNetV4ConvSmall, mobilenetv4_small, ...`
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, Context, Outcome, Recipe, RecipeError
from ..cst_anchors import MARK

HEADER = "{mark} backbone source from the mbpatch template '{family}'. This file is yours to edit.\n"


def _folder(ctx: Context) -> str:
    return f"{ctx.checkout.package.name}/nn/AddModules"


def _parse(text: str, path: str) -> cst.Module:
    try:
        return cst.parse_module(text)
    except cst.ParserSyntaxError as e:
        raise RecipeError(f"syntax error at line {e.editor_line} of {path}: fix it first") from None


def exported_names(init: cst.Module) -> Optional[List[str]]:
    """Names `AddModules/__init__.py` imports at top level; None when it has a star import (all of them)."""
    names: List[str] = []
    for s in init.body:
        if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.ImportFrom):
            imp = s.body[0]
            if isinstance(imp.names, cst.ImportStar):
                return None
            names += [(a.asname.name.value if a.asname else a.name.value) for a in imp.names]
    return names


def defined_names(module: cst.Module) -> List[str]:
    out = []
    for s in module.body:
        if isinstance(s, (cst.ClassDef, cst.FunctionDef)):
            out.append(s.name.value)
        elif isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.Assign):
            out += [t.target.value for t in s.body[0].targets if isinstance(t.target, cst.Name)]
    return out


def set_default_weights(init: cst.Module, cls: str, path: str) -> str:
    """The text of `init` with `<cls>.default_weights = "<path>"` (replaced if present, else appended)."""
    target = m.Assign(targets=[m.AssignTarget(m.Attribute(value=m.Name(cls), attr=m.Name("default_weights")))])
    value = cst.SimpleString(repr(path))
    for s in init.body:
        if m.matches(s, m.SimpleStatementLine(body=[target])):
            old = s.body[0].value
            if isinstance(old, cst.SimpleString) and old.evaluated_value == path:
                return init.code
            return m.replace_node(init, old, value).code
    line = f"{cls}.default_weights = {value.value}  {MARK} --weights: a timm checkpoint loaded at every build\n"
    code = init.code
    return code + ("" if code.endswith("\n") or not code else "\n") + line


def _relative_imports(init: cst.Module):
    """(module name, imported names or None for `*`) of each `from .X import ...` in `__init__.py`."""
    for s in init.body:
        if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.ImportFrom):
            imp = s.body[0]
            if len(imp.relative) != 1 or not isinstance(imp.module, cst.Name):
                continue
            names = None if isinstance(imp.names, cst.ImportStar) else [a.name.value for a in imp.names]
            yield imp.module.value, names


def users_module(ctx: Context, init: cst.Module) -> Optional[str]:
    """The module of the user's own class of the backbone's name that `__init__.py` imports, or None."""
    family = ctx.backbone.family
    for module, names in _relative_imports(init):
        if module in (family, f"mbpatch_{family}"):
            continue
        if names is None and module.lower() == family.lower():
            return module
        if names is not None and ctx.backbone.cls in names:
            return module
    return None


def template_text(ctx: Context) -> str:
    return HEADER.format(mark=MARK, family=ctx.backbone.family) + ctx.backbone.source()


class AddModules(Recipe):
    name = "add_modules"
    step = "create ultralytics/nn/AddModules/ with the backbone source and an __init__.py exporting it"

    def targets(self, ctx: Context) -> List[str]:
        folder = _folder(ctx)
        family = ctx.backbone.family
        return [f"{folder}/{family}.py", f"{folder}/__init__.py", f"{folder}/mbpatch_{family}.py"]

    def inspect(self, ctx: Context, sources: Mapping[str, Optional[str]]):
        src_path, init_path, _ = self.targets(ctx)
        init_text = sources.get(init_path)
        exported = exported_names(_parse(init_text, init_path)) if init_text is not None else []
        return {
            "source file": sources.get(src_path) is not None,
            "export": init_text is not None and (exported is None or all(n in exported for n in ctx.backbone.names)),
        }

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        src_path, init_path, alt_path = self.targets(ctx)
        names: Sequence[str] = ctx.backbone.names
        init_text = sources.get(init_path)
        theirs = None
        if init_text is not None:
            init = _parse(init_text, init_path)
            exported = exported_names(init)
            if exported is None or all(n in exported for n in names):
                if exported is None and sources.get(src_path) is None and sources.get(alt_path) is None:
                    pass  # a star import alone proves nothing about this backbone: add our file
                else:
                    return self._weights(ctx, init_path, init_text, {}, f"{init_path} exports {names[0]}")
            theirs = users_module(ctx, init)
        if theirs is not None:
            if not getattr(ctx, "replace_existing", False):
                e = RecipeError(
                    f"{init_path} already imports your own {ctx.backbone.cls} from {_folder(ctx)}/{theirs}.py; mbpatch's "
                    f"{ctx.backbone.cls} would replace yours for the yaml name '{ctx.backbone.cls}': pass "
                    "--replace-existing to use mbpatch's (your file stays as it is), or keep yours and train with it")
                e.users_own = f"your own {ctx.backbone.cls} in {_folder(ctx)}/{theirs}.py"
                e.file = init_path
                raise e
            if theirs.lower() == ctx.backbone.family.lower():
                src_path = alt_path  # never a second file whose name differs from theirs only in case
        changes = {}
        existing = sources.get(src_path)
        if existing is None:
            changes[src_path] = template_text(ctx)
        elif existing != template_text(ctx):
            missing = [n for n in names if n not in defined_names(_parse(existing, src_path))]
            if missing:
                raise RecipeError(
                    f"{src_path} exists and does not define {', '.join(missing)}; "
                    "rename your file or remove it, then apply again"
                )
        line = f"from .{src_path.rsplit('/', 1)[-1][:-3]} import {', '.join(names)}\n"
        if init_text is None:
            changes[init_path] = f"{MARK} backbones added by mbpatch; each line imports one template's names\n" + line
        else:
            changes[init_path] = init_text + ("" if init_text.endswith("\n") or not init_text else "\n") + line
        kept = "" if src_path in changes else " (kept the existing source file)"
        return self._weights(ctx, init_path, changes[init_path], changes, f"{names[0]} exported from {_folder(ctx)}{kept}")

    def _weights(self, ctx: Context, init_path: str, init_text: str, changes, detail: str) -> Outcome:
        """Add or update `<Class>.default_weights = "<file>"` when --weights was given."""
        if ctx.weights:
            new = set_default_weights(_parse(init_text, init_path), ctx.backbone.cls, ctx.weights)
            if new != init_text:
                changes = {**changes, init_path: new}
                detail += f"; loads {ctx.weights}"
        return Outcome(APPLIED if changes else ALREADY, detail, changes)
