"""block_register — register the block as a channel-scaled layer (per-block tutorial step "edit parse_model").

Target: `models/yolo.py`, every version.
1. `from <prefix>models.mobilenetv2_blocks import InvertedResidual` right after the `models.common` import
   (`eval(m)` in parse_model only sees yolo.py's globals; master imports common's names one by one);
2. `InvertedResidual` joins the module set of parse_model's first channel rule, the branch that does
   `c1, c2 = ch[f], args[0]` and scales `c2` by `width_multiple` (anchor A4; a list up to v6.1, a tuple
   in v6.2, a set from v7.0, one member per line in master). A yaml row `[c2, s, t]` then builds
   `InvertedResidual(c1, c2', s, t)` with `c2' = make_divisible(c2 * width_multiple, 8)`, and `n` scales
   with `depth_multiple` like any layer. The repeat-insert set (C3 and friends) is left alone: `n` copies
   of a block are an `nn.Sequential`, as for Conv.

Already applied: the import (any import of the name from that module) and the name in the set.
Not needed: the whole-backbone style.

VALID (after):  if m in {Conv, InvertedResidual, GhostConv, ...}:\n    c1, c2 = ch[f], args[0]
INVALID: the block in the final `else: c2 = ch[f]` (no channel scaling, wrong constructor arguments).
"""

from __future__ import annotations

from typing import List

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import module_function, parse_model_loop
from ..backbone_branch import chain_branches, chain_start, name_elements
from .layout import BLOCK_CLASS, BLOCK_MODULE, BLOCKS, ensure_import, not_this_style

_C1_C2 = m.Assign(targets=[m.AssignTarget(m.Tuple(elements=[m.Element(m.Name("c1")), m.Element(m.Name("c2"))]))])


def channel_scaled_branch(chain: cst.If) -> cst.If:
    """The branch of the chain whose body starts the channel rule with `c1, c2 = ...`."""
    for branch in chain_branches(chain):
        if m.findall(branch.body, _C1_C2) and m.matches(
            branch.test, m.Comparison(left=m.Name("m"), comparisons=[m.ComparisonTarget(operator=m.In())])
        ):
            return branch
    raise RecipeError(
        "parse_model has no `if m in {...}:` branch with `c1, c2 = ch[f], args[0]`; restore the stock chain "
        f"or add {BLOCK_CLASS} to the channel-scaled module set by hand"
    )


def with_member(branch: cst.If, name: str) -> cst.If:
    """The branch with `name` added to the collection it tests, after the first member, in that member's style."""
    comp = branch.test.comparisons[0]
    coll = comp.comparator
    if not isinstance(coll, (cst.Set, cst.Tuple, cst.List)) or not coll.elements:
        raise RecipeError(f"the channel-scaled module set of parse_model is not a literal; add {name} to it by hand")
    elems = list(coll.elements)
    first = elems[0]
    if len(elems) > 1 or first.comma is not cst.MaybeSentinel.DEFAULT:
        comma = first.comma if first.comma is not cst.MaybeSentinel.DEFAULT else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        elems.insert(1, cst.Element(cst.Name(name), comma=comma))
        if first.comma is cst.MaybeSentinel.DEFAULT:
            elems[0] = first.with_changes(comma=comma)
    else:
        elems = [first.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), cst.Element(cst.Name(name))]
    new_coll = coll.with_changes(elements=elems)
    return branch.with_changes(test=branch.test.with_changes(comparisons=[comp.with_changes(comparator=new_coll)]))


class BlockRegister(ModuleRecipe):
    name = "block_register"
    step = "per-block style: import InvertedResidual into models/yolo.py and add it to parse_model's channel-scaled set"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BLOCKS) or None

    def transform(self, module: cst.Module, ctx: Context):
        done: List[str] = []
        module, changed = ensure_import(module, BLOCK_MODULE, [BLOCK_CLASS], "MobileNetV2 block added by mbpatch")
        if changed:
            done.append("import")
        fn = module_function(module, "parse_model")
        _, loop = parse_model_loop(fn)
        body = list(loop.body.body)
        k = chain_start(body)
        branch = channel_scaled_branch(body[k])
        if BLOCK_CLASS not in name_elements(branch.test.comparisons[0].comparator):
            body[k] = m.replace_node(body[k], branch, with_member(branch, BLOCK_CLASS))
            module = m.replace_node(module, loop, loop.with_changes(body=loop.body.with_changes(body=tuple(body))))
            done.append(f"{BLOCK_CLASS} in the channel-scaled set")
        if not done:
            return module, ALREADY, f"{BLOCK_CLASS} imported and channel-scaled"
        return module, APPLIED, "added " + "; ".join(done)
