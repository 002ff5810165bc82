"""Recipes: one per tutorial step, each a pure function of the source it edits.

A recipe reads the texts it is given and returns the texts it wants written; it never touches the disk.
Writing, journalling, diffs and reporting live in `mbpatch` (the `patcher/` folder).

Statuses a recipe reports (SPEC §2): applied, already applied, not needed (in this version / for this
backbone or arch), failed (raised as RecipeError, which names the file and the step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import libcst as cst

APPLIED = "applied"
ALREADY = "already applied"
NOT_NEEDED = "not needed"
FAILED = "failed"


_PARSED: Dict[str, cst.Module] = {}


def parse(text: str) -> cst.Module:
    """libcst parse, memoised on the text: recipes that edit the same file in turn parse it once."""
    module = _PARSED.get(text)
    if module is None:
        module = cst.parse_module(text)
        remember(module, text)
    return module


def remember(module: cst.Module, code: str) -> None:
    while len(_PARSED) >= 16:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[code] = module


class RecipeError(Exception):
    """The recipe cannot place its change; the message says what it looked for and what to do."""


@dataclass
class Outcome:
    status: str
    detail: str = ""
    changes: Dict[str, str] = field(default_factory=dict)  # path relative to the checkout root -> new text


@dataclass
class Context:
    """Everything a recipe may depend on besides the file texts."""

    checkout: "object"  # mbpatch.checkout.Checkout
    backbone: "object"  # mbpatch.templates.Backbone
    arch: str
    nc: int = 80
    scale: str = "n"
    head: str = "stock"  # rtdetr neck: "stock" (RepC3 e=1.0, 6 decoder layers) or "light" (e=0.5, 3 layers)
    rect_off: bool = False  # the user asked for rect=False in training/validation loaders
    weights: Optional[str] = None  # absolute path of a timm checkpoint the backbone loads when built
    style: str = "backbone"  # YOLOv5 only: "backbone" (whole backbone at layer 0) or "blocks" (per-block MobileNetV2)


class Recipe:
    """Base class. Subclasses set `name`, `step` (the tutorial step it automates) and implement `run`."""

    name: str = ""
    step: str = ""
    kinds: Tuple[str, ...] = ("ultralytics",)

    def targets(self, ctx: Context) -> List[str]:
        """Files (relative to the checkout root) this recipe reads; missing ones are passed as None."""
        raise NotImplementedError

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        raise NotImplementedError

    def inspect(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Optional[Dict[str, bool]]:
        """For `mbpatch doctor`: which parts of a multi-part step are present ({part: present}), so a step
        done halfway (by hand, or by an interrupted run) shows as "partial". None: the step has one part."""
        return None


class ModuleRecipe(Recipe):
    """A recipe that edits one existing Python file of the checkout with libcst."""

    role: str = ""  # key of Checkout.files

    def target(self, ctx: Context) -> Optional[str]:
        return ctx.checkout.files.get(self.role)

    def targets(self, ctx: Context) -> List[str]:
        t = self.target(ctx)
        return [t] if t else []

    def applies(self, ctx: Context) -> Optional[str]:
        """Return a reason when the recipe is not needed for this arch/backbone/option, else None."""
        return None

    def run(self, ctx: Context, sources: Mapping[str, Optional[str]]) -> Outcome:
        reason = self.applies(ctx)
        if reason:
            return Outcome(NOT_NEEDED, reason)
        path = self.target(ctx)
        if path is None or sources.get(path) is None:
            return Outcome(NOT_NEEDED, "this release has no such file")
        try:
            module = parse(sources[path])
        except cst.ParserSyntaxError as e:
            raise RecipeError(f"syntax error at line {e.editor_line}: fix the file first ({e.message})") from None
        new, status, detail = self.transform(module, ctx)
        if status == APPLIED:
            code = new.code
            if code != sources[path]:
                remember(new, code)
                return Outcome(APPLIED, detail, {path: code})
        return Outcome(status, detail)

    def transform(self, module: cst.Module, ctx: Context) -> Tuple[cst.Module, str, str]:
        """Return (new module, status, detail). Raise RecipeError when the change cannot be placed."""
        raise NotImplementedError
