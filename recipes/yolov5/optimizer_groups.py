"""optimizer_groups — every backbone parameter is trained, not only those named `weight` or `bias`.

Not a tutorial step: the tutorials never noticed. Target: the loop that sorts parameters into the three
optimizer groups (anchor A14), `train()` in `train.py` (git v6.0, PyPI 6.0.x) or `smart_optimizer` in
`utils/torch_utils.py` (v6.1, PyPI 6.1.x). It visits `model.modules()` and picks up only `v.bias` and
`v.weight`; any other parameter (MobileNetV4 hybrid's learnable layer scale `gamma`, or one a user adds to
the template) is in no group, so the optimizer never updates it and the layer scale stays at its 1e-5 init.

Edit: right after that loop, the parameters in no group join the group of decayed weights, as v6.2 and later
do themselves (`named_parameters(recurse=0)`: everything that is neither a bias nor a norm weight):

    mbpatch_grouped = {id(p) for group in (g0, g1, g2) for p in group}  # mbpatch: ...
    g1.extend(p for p in model.parameters() if id(p) not in mbpatch_grouped)

Already applied: that `mbpatch_grouped = ...` statement after the loop.
Not needed: v6.2 and later (the loop walks `named_parameters`); the per-block style (plain conv and BN layers).

VALID (7.0.14):   for p_name, p in v.named_parameters(recurse=0): ...
INVALID (6.1.9):  for v in model.modules(): if hasattr(v, 'bias') ...: g[2].append(v.bias) ...
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import libcst as cst
import libcst.matchers as m

from .. import ALREADY, APPLIED, NOT_NEEDED, Context, Outcome, Recipe, RecipeError, parse
from ..cst_anchors import MARK, stmt
from .layout import BACKBONE, dotted, not_this_style

SEEN = "mbpatch_grouped"
_LOOP = m.For(target=m.Name("v"), iter=m.Call(func=m.Attribute(value=m.Name("model"), attr=m.Name("modules"))))
_APPEND_WEIGHT = m.Call(func=m.Attribute(attr=m.Name("append")),
                        args=[m.Arg(m.Attribute(value=m.Name("v"), attr=m.Name("weight") | m.Name("bias")))])
_OURS = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name(SEEN))])])


def _decay_group(loop: cst.For) -> Optional[str]:
    """The group `v.weight` goes to in the `elif hasattr(v, 'weight')` branch (weights with decay)."""
    has_weight = m.Call(func=m.Name("hasattr"), args=[m.Arg(m.Name("v")), m.Arg(m.SimpleString())])
    for branch in m.findall(loop, m.If()):
        tests = [c for c in m.findall(branch.test, has_weight) if c.args[1].value.evaluated_value == "weight"]
        calls = m.findall(branch.body, _APPEND_WEIGHT) if tests else []
        if calls:
            return dotted(calls[0].func.value)
    return None


class _After(cst.CSTTransformer):
    """Insert the catch-up statements after each dropping loop; count loops and those already caught up."""

    def __init__(self):
        self.loops = self.done = 0

    def leave_IndentedBlock(self, original, updated):
        body, out = list(updated.body), []
        for k, s in enumerate(body):
            out.append(s)
            if not (m.matches(s, _LOOP) and m.findall(s, _APPEND_WEIGHT)):
                continue
            self.loops += 1
            if k + 1 < len(body) and m.matches(body[k + 1], _OURS):
                self.done += 1
                continue
            groups = list(dict.fromkeys(dotted(c.func.value) for c in m.findall(s, _APPEND_WEIGHT)))
            decay = _decay_group(s)
            if decay is None:
                raise RecipeError("the optimizer-group loop has no `elif hasattr(v, 'weight')` branch; "
                                  "add the parameters it misses to a group by hand")
            listed = ", ".join(groups) + ("," if len(groups) == 1 else "")
            out.append(stmt(f"{SEEN} = {{id(p) for group in ({listed}) for p in group}}  "
                            f"{MARK} parameters named neither weight nor bias (layer scale) are trained too\n"))
            out.append(stmt(f"{decay}.extend(p for p in model.parameters() if id(p) not in {SEEN})\n"))
        return updated.with_changes(body=tuple(out)) if len(out) != len(body) else updated


class OptimizerGroups(Recipe):
    name = "optimizer_groups"
    step = "the optimizer groups take every parameter, not only weight/bias (MobileNetV4 hybrid layer scale)"
    kinds = ("yolov5",)

    def targets(self, ctx: Context) -> List[str]:
        if not_this_style(ctx, BACKBONE):
            return []
        return [t for t in (ctx.checkout.files.get("train"), ctx.checkout.files.get("torch_utils")) if t]

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = not_this_style(ctx, BACKBONE)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        changes, done = {}, []
        for path in self.targets(ctx):
            text = sources.get(path)
            if text is None or "model.modules()" not in text:  # cheap pre-filter; the matchers decide
                continue
            try:
                module = parse(text)
            except cst.ParserSyntaxError as e:
                raise RecipeError(f"{path}: syntax error at line {e.editor_line}: fix the file first") from None
            after = _After()
            new = module.visit(after)
            if after.loops and after.done == after.loops:
                done.append(path)
            elif after.loops:
                changes[path] = new.code
        if changes:
            return Outcome(APPLIED, f"every parameter is put in an optimizer group ({', '.join(changes)})", changes)
        if done:
            return Outcome(ALREADY, f"{', '.join(done)} groups every parameter")
        return Outcome(NOT_NEEDED, "this release groups parameters by name (named_parameters): none is left out")
