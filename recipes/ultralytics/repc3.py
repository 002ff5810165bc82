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
from typing import Dict, List, Optional

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import as_ast, class_def, code_of, methods, replace_within


def _conv_assign(attr: str):
    return m.Assign(
        targets=[m.AssignTarget(m.Attribute(value=m.Name("self"), attr=m.Name(attr)))],
        value=m.Call(func=m.Name("Conv")),
    )


def outputs(cls: ast.ClassDef) -> Dict[str, Optional[str]]:
    """The one reading of RepC3 (precheck, transform and doctor's inspect use it): for cv1 and cv2, the name
    given as the second argument of `self.cvN = Conv(c1, X, ...)` ("c2" stock, "c_" fixed; None: no such
    single assignment or not a plain name)."""
    found: Dict[str, List[ast.expr]] = {"cv1": [], "cv2": []}
    for node in ast.walk(cls):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
                and node.targets[0].attr in found and isinstance(node.targets[0].value, ast.Name)
                and node.targets[0].value.id == "self" and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "Conv" and len(node.value.args) > 1):
            found[node.targets[0].attr].append(node.value.args[1])
    return {attr: (args[0].id if len(args) == 1 and isinstance(args[0], ast.Name) else None)
            for attr, args in found.items()}


def _repc3(text: str) -> Optional[ast.ClassDef]:
    classes = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "RepC3"]
    return classes[0] if classes else None


class RepC3Hidden(ModuleRecipe):
    name = "repc3"
    step = "RepC3: cv1 and cv2 output the hidden width c_ (so e=0.5 builds)"
    role = "block"

    def applies(self, ctx: Context):
        return None if ctx.arch == "rtdetr" else f"only for --arch rtdetr (this is {ctx.arch})"

    def inspect(self, ctx: Context, sources):
        text = sources.get(self.target(ctx) or "")
        cls = _repc3(text) if text is not None else None
        return None if cls is None else {attr: name == "c_" for attr, name in outputs(cls).items()}

    def precheck(self, text, ctx):
        try:
            cls = _repc3(text)
        except SyntaxError:
            return None  # transform reports it
        if cls is None:
            return NOT_NEEDED, "this release has no RepC3"
        if all(name == "c_" for name in outputs(cls).values()):
            return ALREADY, "cv1 and cv2 already output c_"
        return None

    def transform(self, module: cst.Module, ctx: Context):
        cls = class_def(module, "RepC3")
        if cls is None:
            return module, NOT_NEEDED, "this release has no RepC3"
        init = [fn for fn in methods(cls) if fn.name.value == "__init__"]
        if not init:
            raise RecipeError("RepC3 has no __init__; restore it")
        reading = outputs(as_ast(init[0]))
        if all(name == "c_" for name in reading.values()):
            return module, ALREADY, "cv1 and cv2 already output c_"
        fixed = init[0]
        for attr, name in reading.items():
            if name == "c_":
                continue
            found = m.findall(fixed, _conv_assign(attr))
            if name != "c2" or len(found) != 1:
                what = f"outputs `{code_of(found[0].value.args[1].value)}`" if len(found) == 1 and len(found[0].value.args) > 1 \
                    else f"has no single `self.{attr} = Conv(c1, ..., 1, 1)`"
                raise RecipeError(f"RepC3.{attr} {what}, expected c2 or c_; fix it by hand")
            call = found[0].value
            args = list(call.args)
            args[1] = args[1].with_changes(value=cst.Name("c_"))
            fixed = m.replace_node(fixed, call, call.with_changes(args=args))
        return replace_within(module, cls, init[0], fixed), APPLIED, "cv1/cv2 output c_"
