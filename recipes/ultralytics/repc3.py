"""repc3 — `RepC3.cv1` and `cv2` output the hidden width `c_` (tutorial step "fix RepC3").

Target: `ultralytics/nn/modules/block.py` `class RepC3` (8.0.98+). Up to 8.3.37 both convolutions output
`c2`, which only works while `e = 1.0` (`c_ == c2`); the lighter RT-DETR neck of the MobileNetV4 tutorial
passes `e = 0.5` and then fails with a channel mismatch. 8.3.38 fixed it upstream.

Edit: in `RepC3.__init__`, the second argument of `self.cv1 = Conv(c1, X, 1, 1)` and of `self.cv2 = ...`
becomes `c_` where it is `c2`.
Already applied: both already read `c_` (upstream from 8.3.38, or by hand).
Not needed: releases without RepC3 (before 8.0.98) and archs other than rtdetr.

VALID:   self.cv1 = Conv(c1, c_, 1, 1)
INVALID: self.cv1 = Conv(c1, c2, 1, 1)
"""

from __future__ import annotations

import ast

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import class_def, code_of, methods, replace_within


def _conv_assign(attr: str):
    return m.Assign(
        targets=[m.AssignTarget(m.Attribute(value=m.Name("self"), attr=m.Name(attr)))],
        value=m.Call(func=m.Name("Conv")),
    )


class RepC3Hidden(ModuleRecipe):
    name = "repc3"
    step = "RepC3: cv1 and cv2 output the hidden width c_ (so e=0.5 builds)"
    role = "block"

    def applies(self, ctx: Context):
        return None if ctx.arch == "rtdetr" else f"only for --arch rtdetr (this is {ctx.arch})"

    def inspect(self, ctx: Context, sources):
        text = sources.get(self.target(ctx) or "")
        cls = class_def(cst.parse_module(text), "RepC3") if text is not None else None
        if cls is None:
            return None
        return {attr: any(len(a.value.args) > 1 and m.matches(a.value.args[1].value, m.Name("c_"))
                          for a in m.findall(cls, _conv_assign(attr))) for attr in ("cv1", "cv2")}

    def precheck(self, text, ctx):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None  # transform reports it
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RepC3"]
        if not classes:
            return NOT_NEEDED, "this release has no RepC3"
        seconds = [
            node.value.args[1]
            for node in ast.walk(classes[0])
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
            and node.targets[0].attr in ("cv1", "cv2") and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "Conv" and len(node.value.args) > 1
        ]
        if len(seconds) == 2 and all(isinstance(a, ast.Name) and a.id == "c_" for a in seconds):
            return ALREADY, "cv1 and cv2 already output c_"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        cls = class_def(module, "RepC3")
        if cls is None:
            return module, NOT_NEEDED, "this release has no RepC3"
        init = [fn for fn in methods(cls) if fn.name.value == "__init__"]
        if not init:
            raise RecipeError("RepC3 has no __init__; restore it")
        fixed, edits = init[0], 0
        for attr in ("cv1", "cv2"):
            found = m.findall(fixed, _conv_assign(attr))
            if len(found) != 1 or len(found[0].value.args) < 2:
                raise RecipeError(f"RepC3.__init__ has no `self.{attr} = Conv(c1, ..., 1, 1)`; fix it by hand")
            call = found[0].value
            second = call.args[1].value
            if m.matches(second, m.Name("c_")):
                continue
            if not m.matches(second, m.Name("c2")):
                raise RecipeError(f"RepC3.{attr} outputs `{code_of(second)}`, expected c2 or c_")
            args = list(call.args)
            args[1] = args[1].with_changes(value=cst.Name("c_"))
            fixed = m.replace_node(fixed, call, call.with_changes(args=args))
            edits += 1
        if not edits:
            return module, ALREADY, "cv1 and cv2 already output c_"
        return replace_within(module, cls, init[0], fixed), APPLIED, "cv1/cv2 output c_"
