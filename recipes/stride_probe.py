"""The stride probe edit both `stride_probe` recipes make (Ultralytics `DetectionModel`, YOLOv5 `Model`).

Both detectors learn their strides in `__init__` by running one zero image through the whole model:
`m.stride = torch.tensor([s / x.shape[-2] for x in forward(torch.zeros(1, ch, s, s))])`. The model is in
train mode then, so every BatchNorm layer updates its running mean and variance with that batch (momentum
0.1): the ImageNet statistics that `--weights` just loaded into the backbone are pulled towards those of a
black image before training starts. Ultralytics fixed this upstream in 8.3.x by running the probe with the
model in eval mode and only the head's `training` flag set (so it still returns its raw maps).

Edit: the same, around the probe statement, wherever it is nested in `__init__`:

    self.model.eval()  # mbpatch: ...
    m.training = True
    m.stride = torch.tensor([...])  # unchanged
    self.model.train()

Already applied: a `self.model.eval()` statement earlier in the probe's block (ours carries the mbpatch mark;
without it, it is the release's own fix and the step is not needed).

VALID:   self.model.eval(); m.training = True; m.stride = torch.tensor([... torch.zeros(1, ch, s, s) ...])
INVALID: m.stride = torch.tensor([s / x.shape[-2] for x in forward(torch.zeros(1, ch, s, s))])  # in train mode
"""

from __future__ import annotations

from typing import Sequence, Tuple

import libcst as cst
from . import cst_match as m

from . import ALREADY, APPLIED, NOT_NEEDED, RecipeError
from .cst_anchors import MARK, class_def, methods, stmt

_PROBE = m.SimpleStatementLine(body=[m.Assign(
    targets=[m.AssignTarget(m.Attribute(value=m.Name("m"), attr=m.Name("stride")))],
    value=m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("tensor"))),
)])
_ZEROS = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("zeros")))
_EVAL = m.SimpleStatementLine(body=[m.Expr(m.Call(
    func=m.Attribute(value=m.Attribute(value=m.Name("self"), attr=m.Name("model")), attr=m.Name("eval")),
))])

BEFORE = (
    f"self.model.eval()  {MARK} the stride probe must not move the loaded BatchNorm statistics\n",
    "m.training = True  # the head still returns its raw maps, whose sizes give the strides\n",
)
AFTER = "self.model.train()\n"
NO_WEIGHTS = "only with --weights (fresh BatchNorm statistics have nothing to lose)"


def _is_probe(node: cst.CSTNode) -> bool:
    return m.matches(node, _PROBE) and bool(m.findall(node, _ZEROS))


class _Wrap(cst.CSTTransformer):
    def __init__(self):
        self.found = 0
        self.state = None  # ALREADY / NOT_NEEDED when some probe is already protected

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
        body = list(updated.body)
        out = []
        for k, s in enumerate(body):
            if not _is_probe(s):
                out.append(s)
                continue
            self.found += 1
            evals = [e for e in body[:k] if m.matches(e, _EVAL)]
            if evals:
                comment = evals[-1].trailing_whitespace.comment
                self.state = ALREADY if comment is not None and MARK in comment.value else NOT_NEEDED
                out.append(s)
                continue
            first = stmt(BEFORE[0]).with_changes(leading_lines=s.leading_lines)
            out += [first, stmt(BEFORE[1]), s.with_changes(leading_lines=()), stmt(AFTER)]
        return updated.with_changes(body=tuple(out)) if len(out) != len(body) else updated


def protect_stride_probe(module: cst.Module, owners: Sequence[str]) -> Tuple[cst.Module, str, str]:
    """(module, status, detail): run the stride probe of the first class of `owners` found in eval mode."""
    classes = [c for c in (class_def(module, o) for o in owners) if c is not None]
    inits = [f for f in methods(classes[0]) if f.name.value == "__init__"] if classes else []
    if len(inits) != 1:
        raise RecipeError(f"expected class {' or '.join(owners)} with an __init__ (its stride probe); "
                          "restore it or edit by hand")
    owner = classes[0].name.value
    init = inits[0]
    wrap = _Wrap()
    new = init.visit(wrap)
    if wrap.found == 0:
        raise RecipeError(
            f"{owner}.__init__ has no stride probe `m.stride = torch.tensor([... torch.zeros(...) ...])`; "
            "run it in eval mode by hand, or apply without --weights"
        )
    if wrap.state == ALREADY:
        return module, ALREADY, f"{owner}.__init__ probes the stride in eval mode"
    if wrap.state == NOT_NEEDED:
        return module, NOT_NEEDED, f"{owner}.__init__ of this release probes the stride in eval mode"
    return m.replace_node(module, init, new), APPLIED, f"{owner}.__init__ probes the stride in eval mode"
