"""The `fuse()` edit both `fuse` recipes make (Ultralytics `BaseModel.fuse`, YOLOv5 `Model`/`BaseModel.fuse`).

The detectors' own `fuse()` (called by val, predict, export and `attempt_load`) folds only their own layer
classes (`Conv`, `DWConv`, `RepConv`, ...): a backbone that mbpatch adds would keep every BatchNorm and
RepViT its training-time branches. mbpatch's templates know how to fold themselves (`reparameterize()`:
Conv+BN pairs, RepViT's three-branch token mixers, MobileNetV4's layer scale), so the edit is one loop, placed
right before the release's own `for m in self.model.modules():` loop, wherever that loop is nested (inside
`if not self.is_fused():` from Ultralytics 8.0.1xx, at the top of the method in 8.0.0 and YOLOv5):

    for m in list(self.model.modules()):  # mbpatch: ...
        if hasattr(m, "reparameterize"):
            m.reparameterize()
    for m in self.model.modules():  # unchanged
        ...

Folding happens when `fuse()` is called, after any `--weights` checkpoint was loaded at build time, so the
loaded weights are what gets folded. `reparameterize()` changes nothing the second time, so fusing twice is a
no-op (RT-DETR's `is_fused()` never turns true: its decoder's LayerNorms count as norm layers).

Already applied: `fuse` calls `.reparameterize()` somewhere (ours carries the mbpatch mark; one written by
hand counts too). Not needed: the file has no `fuse` method in those classes (a trimmed copy: nothing fuses).

VALID:   for m in list(self.model.modules()): if hasattr(m, "reparameterize"): m.reparameterize()
INVALID: (stock) only `isinstance(m, (Conv, DWConv)) and hasattr(m, "bn")` modules are folded
"""

from __future__ import annotations

import ast
from typing import Optional, Sequence, Tuple

import libcst as cst
from . import cst_match as m

from . import ALREADY, APPLIED, NOT_NEEDED, RecipeError
from .cst_anchors import MARK, as_ast, class_def, methods, stmt

HOOK = "reparameterize"
LOOP = f'''\
for m in list(self.model.modules()):  {MARK} backbones fold themselves too
    if hasattr(m, "{HOOK}"):
        m.{HOOK}()
'''

_SELF_MODEL = m.Attribute(value=m.Name("self"), attr=m.Name("model"))
_STOCK_LOOP = m.For(target=m.Name("m"), iter=m.Call(func=m.Attribute(value=_SELF_MODEL, attr=m.Name("modules"))))


def _fuse_method(module: cst.Module, owners: Sequence[str]) -> Tuple[Optional[str], Optional[cst.FunctionDef]]:
    for owner in owners:
        cls = class_def(module, owner)
        found = [f for f in methods(cls) if f.name.value == "fuse"] if cls is not None else []
        if len(found) == 1:
            return owner, found[0]
    return None, None


class _InsertBefore(cst.CSTTransformer):
    """Put the hook loop before the first stock `for m in self.model.modules():` loop, in its own block."""

    def __init__(self):
        self.done = False

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
        if self.done:
            return updated
        body = list(updated.body)
        for k, s in enumerate(body):
            if m.matches(s, _STOCK_LOOP):
                self.done = True
                ours = stmt(LOOP).with_changes(leading_lines=s.leading_lines)
                body[k:k] = [ours]
                body[k + 1] = s.with_changes(leading_lines=())
                return updated.with_changes(body=tuple(body))
        return updated


def calls_hook(fn: ast.FunctionDef) -> bool:
    """The one "already applied" test: the `fuse` method calls `.reparameterize()` somewhere."""
    return any(isinstance(n, ast.Attribute) and n.attr == HOOK for n in ast.walk(fn))


def calls_hook_ast(text: str, owners: Sequence[str]) -> Optional[bool]:
    """`calls_hook` on a file's text with the stdlib `ast` (no libcst parse): None when the first owner with a
    `fuse` method is missing (or a syntax error): the libcst transform then says why."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    for owner in owners:
        body = getattr(classes.get(owner), "body", [])
        fns = [f for f in body if isinstance(f, ast.FunctionDef) and f.name == "fuse"]
        if len(fns) == 1:
            return calls_hook(fns[0])
    return None


def add_fuse_hook(module: cst.Module, owners: Sequence[str]) -> Tuple[cst.Module, str, str]:
    """(module, status, detail): make the first of `owners` that has a `fuse` method call the hook."""
    owner, fn = _fuse_method(module, owners)
    if fn is None:  # a trimmed or rewritten file: nothing here fuses, so there is nothing to extend
        return module, NOT_NEEDED, f"no class {' or '.join(owners)} with a fuse() method in this file"
    if calls_hook(as_ast(fn)):
        return module, ALREADY, f"{owner}.fuse() lets the backbone fold itself"
    insert = _InsertBefore()
    new = fn.visit(insert)
    if not insert.done:
        raise RecipeError(
            f"{owner}.fuse() has no `for m in self.model.modules():` loop to put the backbone's fold before; "
            "restore it or edit by hand"
        )
    return m.replace_node(module, fn, new), APPLIED, f"{owner}.fuse() also folds the backbone ({HOOK}())"
