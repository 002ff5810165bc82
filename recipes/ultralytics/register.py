"""register — make parse_model know the backbone (tutorial step "edit parse_model", part 1).

Target: `ultralytics/nn/tasks.py`, every release from 8.0.0.

What the tutorials do by hand, and this recipe does by structure:
1. import the backbone names into tasks.py (`from ultralytics.nn.AddModules import ...` after the last
   top-level import), so the yaml names resolve: parse_model looks names up in the tasks.py globals
   (`eval(m)` up to 8.0.49, `globals()[m]` after);
2. `backbone = False` once, before the layer loop (it stays True for every layer after the backbone);
3. `t = m` as the loop's first statement: the yaml name, shown in the summary for the backbone row;
4. a first branch of the dispatch chain: `if m in {<names>}: m = m(*args); c2 = m.width_list; backbone = True`.
   The original chain becomes its `elif`s unchanged. The chain is found as the first `if m in ...` after
   `n = n_ = ...`, because from 8.4.67 an `if restricted and ...` comes earlier in the loop.

Already applied: each of the four parts is recognised on its own, whoever wrote it (mbpatch, a tutorial
followed by hand): a star or named import from `AddModules`, an assignment to `backbone` before the loop,
`t = m` in the loop, and a chain branch that sets `backbone = True` (missing names are added to its set).

VALID (after):
    backbone = False
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        t = m
        m = getattr(torch.nn, m[3:]) if "nn." in m else globals()[m]
        ...
        n = n_ = max(round(n * depth), 1) if n > 1 else n
        if m in {MobileNetV2, mobilenetv2}:
            m = m(*args)
            c2 = m.width_list
            backbone = True
        elif m in {Classify, Conv, ...}:
INVALID (before): the stock loop, where `MobileNetV2` raises KeyError in `globals()[m]`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import libcst as cst

from .. import ALREADY, APPLIED, Context, ModuleRecipe
from .. import backbone_branch
from ..cst_anchors import MARK, code_of, stmt


def _addmodules_import(node: cst.CSTNode) -> bool:
    if not (isinstance(node, cst.SimpleStatementLine) and isinstance(node.body[0], cst.ImportFrom)):
        return False
    imp = node.body[0]
    mod = code_of(imp.module) if imp.module else ""
    return mod.split(".")[-1] == "AddModules"


def _imported_names(imp: cst.ImportFrom) -> Tuple[bool, List[str]]:
    if isinstance(imp.names, cst.ImportStar):
        return True, []
    return False, [a.name.value for a in imp.names if isinstance(a.name, cst.Name)]


def _ensure_import(module: cst.Module, package: str, names: Sequence[str]) -> Tuple[cst.Module, bool]:
    body = list(module.body)
    existing = [k for k, s in enumerate(body) if _addmodules_import(s)]
    for k in existing:
        star, have = _imported_names(body[k].body[0])
        if star or all(n in have for n in names):
            return module, False
    if existing:  # extend the first named import with the missing names
        k = existing[0]
        imp = body[k].body[0]
        _, have = _imported_names(imp)
        extra = [cst.ImportAlias(cst.Name(n)) for n in names if n not in have]
        aliases = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in imp.names] + extra
        aliases = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in aliases]
        new_imp = imp.with_changes(names=tuple(aliases), lpar=None, rpar=None)
        body[k] = body[k].with_changes(body=[new_imp])
        return module.with_changes(body=tuple(body)), True
    # after the last top-level import that precedes the first def/class
    last = -1
    for k, s in enumerate(body):
        if isinstance(s, (cst.FunctionDef, cst.ClassDef)):
            break
        if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], (cst.Import, cst.ImportFrom)):
            last = k
    line = stmt(f"from {package}.nn.AddModules import {', '.join(names)}  {MARK} backbones added by mbpatch\n")
    body.insert(last + 1, line)
    return module.with_changes(body=tuple(body)), True


class Register(ModuleRecipe):
    name = "register"
    step = "import the backbone into tasks.py and add its parse_model branch (backbone = True, c2 = width_list)"
    role = "tasks"

    def inspect(self, ctx: Context, sources):
        text = sources.get(self.target(ctx) or "")
        if text is None:
            return None
        module = cst.parse_module(text)
        return {"import": any(_addmodules_import(s) for s in module.body), **backbone_branch.state(module)}

    def transform(self, module: cst.Module, ctx: Context):
        names = list(ctx.backbone.names)
        module, changed = _ensure_import(module, ctx.checkout.package.name, names)
        module, done = backbone_branch.ensure_backbone_branch(module, names)
        done = (["import"] if changed else []) + done
        if not done:
            return module, ALREADY, "import, flag, yaml name and branch present"
        return module, APPLIED, "added " + "; ".join(done)
