"""The optimizer-group edit both `optimizer_groups` recipes make (Ultralytics trainer, YOLOv5 train/torch_utils).

Early releases of both sort parameters into the three optimizer groups with one loop over
`model.modules()` that picks up only `v.bias` and `v.weight` (Ultralytics up to 8.0.109 `build_optimizer`,
YOLOv5 v6.0 `train()` and v6.1/v6.2 `smart_optimizer`, PyPI 6.0.1-6.2.2). Any other parameter (MobileNetV4 hybrid's learnable
layer scale `gamma`, or one a user adds to the template) is in no group: the optimizer never updates it,
and the layer scale stays at its 1e-5 init.

Edit: right after each such loop, the parameters in no group join the group of decayed weights, as later
releases do themselves (`named_parameters(recurse=False)`: all that is neither a bias nor a norm weight):

    mbpatch_grouped = {id(p) for group in (g[2], g[1], g[0]) for p in group}  # mbpatch: ...
    g[0].extend(p for p in model.parameters() if id(p) not in mbpatch_grouped)

Already applied: that `mbpatch_grouped = ...` statement right after the loop.
Not needed: releases whose loop walks `named_parameters`.

VALID (YOLOv5 7.0.14, Ultralytics 8.1.20):  for p_name, p in v.named_parameters(recurse=0): ...
INVALID (YOLOv5 6.1.9, Ultralytics 8.0.50): for v in model.modules(): if hasattr(v, 'bias') ...: g[2].append(v.bias) ...
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import libcst as cst
from . import cst_match as m

from . import ALREADY, APPLIED, NOT_NEEDED, Outcome, RecipeError, Sources, parse
from .cst_anchors import MARK, code_of, stmt

SEEN = "mbpatch_grouped"
_LOOP = m.For(target=m.Name("v"), iter=m.Call(func=m.Attribute(value=m.Name("model"), attr=m.Name("modules"))))
_APPEND_WEIGHT = m.Call(func=m.Attribute(attr=m.Name("append")),
                        args=[m.Arg(m.Attribute(value=m.Name("v"), attr=m.Name("weight") | m.Name("bias")))])
_OURS = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name(SEEN))])])
_HAS = m.Call(func=m.Name("hasattr"), args=[m.Arg(m.Name("v")), m.Arg(m.SimpleString())])


def _decay_group(loop: cst.For) -> Optional[str]:
    """The group `v.weight` goes to in the `elif hasattr(v, 'weight') ...` branch (weights with decay)."""
    for branch in m.findall(loop, m.If()):
        tests = [c for c in m.findall(branch.test, _HAS) if c.args[1].value.evaluated_value == "weight"]
        calls = m.findall(branch.body, _APPEND_WEIGHT) if tests else []
        if calls:
            return code_of(calls[0].func.value)
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
            groups = list(dict.fromkeys(code_of(c.func.value) for c in m.findall(s, _APPEND_WEIGHT)))
            decay = _decay_group(s)
            if decay is None:
                raise RecipeError("the optimizer-group loop has no `elif hasattr(v, 'weight')` branch; "
                                  "add the parameters it misses to a group by hand")
            listed = ", ".join(groups) + ("," if len(groups) == 1 else "")
            out.append(stmt(f"{SEEN} = {{id(p) for group in ({listed}) for p in group}}  "
                            f"{MARK} parameters named neither weight nor bias (layer scale) are trained too\n"))
            out.append(stmt(f"{decay}.extend(p for p in model.parameters() if id(p) not in {SEEN})\n"))
        return updated.with_changes(body=tuple(out)) if len(out) != len(body) else updated


def group_every_parameter(paths: Sequence[str], sources: Mapping[str, Optional[str]]) -> Outcome:
    """Place the catch-up after every dropping loop found in `paths` (those that exist)."""
    changes, done = {}, []
    for path in paths:
        module = sources.module(path) if isinstance(sources, Sources) else None  # an earlier step's edit
        if module is None:
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
            changes[path] = new
    if changes:
        return Outcome(APPLIED, f"every parameter is put in an optimizer group ({', '.join(changes)})", modules=changes)
    if done:
        return Outcome(ALREADY, f"{', '.join(done)} groups every parameter")
    return Outcome(NOT_NEEDED, "this release groups parameters by name (named_parameters): none is left out")
