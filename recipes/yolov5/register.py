"""register — make parse_model know the backbone (tutorial step "import it into yolo.py, add its branch").

Target: `models/yolo.py`, every version (git v6.0 to master, PyPI 6.0.x to 7.0.x).

What the tutorials do by hand, and this recipe does by structure (anchors A1-A4 of ref/yolov5-versions.md):
1. `from <prefix>models.<family> import <names>` right after the `models.common` import: `parse_model`
   resolves yaml names with `eval(m)` in yolo.py's globals, and master's explicit import list would not
   bring a name in from elsewhere. `<prefix>` comes from that import ('' git, 'yolov5.' PyPI);
2. `backbone = False` once, before the layer loop (it stays True for every layer after the backbone);
3. `t = m` as the loop's first statement: the yaml name, shown in the summary for the backbone row
   (YOLOv5's own `t = str(m)[8:-2]` would print the module's repr for an instance);
4. a first branch of the channel-rule chain (the `if m in {...}` after `n = n_ = ...`):
   `if m in {<names>}: m = m(*args); c2 = m.width_list; backbone = True`; the original chain (list,
   tuple, set or master's one-member-per-line set) becomes its `elif`s, untouched.

Already applied: each part is recognised on its own, whoever wrote it: an import of the backbone's names
from `<prefix>models.<family>` (star or named), an assignment to `backbone` before the loop, `t = m` in the
loop, and a chain branch that sets `backbone = True` (missing names are added to its set).
Not needed: the per-block style (`--style blocks`), whose layers are ordinary modules.

VALID (after):
    backbone = False
    for i, (f, n, m, args) in enumerate(d['backbone'] + d['head']):
        t = m
        m = eval(m) if isinstance(m, str) else m
        ...
        if m in {RepViTM1, repvit_m1}:
            m = m(*args)
            c2 = m.width_list
            backbone = True
        elif m in {Conv, GhostConv, ...}:
INVALID (before): `NameError: name 'RepViTM1' is not defined` from `eval(m)`.
"""

from __future__ import annotations

from typing import List

import libcst as cst
import libcst.matchers as m

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import MARK, is_assign_to, module_function, parse_model_loop, stmt
from ..ultralytics.register import _chain_branches, _chain_start, _name_elements, _sets_backbone
from .layout import BACKBONE, ensure_import, not_this_style

_T_IS_M = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name("t"))], value=m.Name("m"))])


def add_names(chain: cst.If, branch: cst.If, names: List[str]) -> cst.If:
    """Add `names` to the literal collection `branch` tests (`if m in {...}`), keeping its other elements."""
    coll = branch.test.comparisons[0].comparator
    if not isinstance(coll, (cst.Set, cst.Tuple, cst.List)):
        raise RecipeError(f"the backbone branch of parse_model does not test a literal set; add {', '.join(names)} by hand")
    elems = [e.with_changes(comma=cst.MaybeSentinel.DEFAULT) for e in coll.elements]
    elems += [cst.Element(cst.Name(n)) for n in names]
    new_test = branch.test.with_changes(comparisons=[branch.test.comparisons[0].with_changes(comparator=cst.Set(elements=elems))])
    return chain.deep_replace(branch.test, new_test)


class Register(ModuleRecipe):
    name = "register"
    step = "import the backbone into models/yolo.py and add its parse_model branch (c2 = width_list, backbone = True)"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BACKBONE) or None

    def transform(self, module: cst.Module, ctx: Context):
        names = list(ctx.backbone.names)
        done: List[str] = []
        module, changed = ensure_import(module, ctx.backbone.family, names, "backbone added by mbpatch")
        if changed:
            done.append("import")

        fn = module_function(module, "parse_model")
        k_loop, loop = parse_model_loop(fn)
        fn_body = list(fn.body.body)
        loop_body = list(loop.body.body)

        if not any(is_assign_to("backbone")(s) for s in fn_body[:k_loop]):
            fn_body.insert(k_loop, stmt(f"backbone = False  {MARK} becomes True at the backbone layer\n"))
            k_loop += 1
            done.append("flag")
        if not any(m.matches(s, _T_IS_M) for s in loop_body):
            loop_body.insert(0, stmt(f"t = m  {MARK} the yaml name, shown in the summary for a backbone\n"))
            done.append("t = m")

        k = _chain_start(loop_body)
        chain = loop_body[k]
        ours = [b for b in _chain_branches(chain) if _sets_backbone(b)]
        if ours:
            have = _name_elements(ours[0].test.comparisons[0].comparator)
            missing = [n for n in names if n not in have]
            if missing:
                loop_body[k] = add_names(chain, ours[0], missing)
                done.append("names " + ", ".join(missing))
        else:
            new = stmt(
                f"if m in {{{', '.join(names)}}}:  {MARK} a backbone returns a list of feature maps\n"
                "    m = m(*args)\n    c2 = m.width_list\n    backbone = True\n"
            )
            loop_body[k] = new.with_changes(orelse=chain.with_changes(leading_lines=()), leading_lines=chain.leading_lines)
            done.append("branch")

        if not done:
            return module, ALREADY, "import, flag, yaml name and branch present"
        loop = loop.with_changes(body=loop.body.with_changes(body=tuple(loop_body)))
        fn_body[k_loop] = loop
        new_fn = fn.with_changes(body=fn.body.with_changes(body=tuple(fn_body)))
        return module.deep_replace(fn, new_fn), APPLIED, "added " + "; ".join(done)
