"""Recipes: one per tutorial step, each a pure function of the source it edits.

A recipe reads the texts it is given and returns the texts it wants written; it never touches the disk.
Writing, journalling, diffs and reporting live in `mbpatch` (the `patcher/` folder).

Statuses a recipe reports (SPEC §2): applied, already applied, not needed (in this version / for this
backbone or arch), failed (raised as RecipeError, which names the file and the step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # imported where a recipe parses: `mbpatch --help`, `list` and doctor's checkout part skip libcst
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
        import libcst as cst

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
    texts: Dict[str, str] = field(default_factory=dict)  # path relative to the checkout root -> new text
    modules: Dict[str, cst.Module] = field(default_factory=dict)  # or -> new libcst module (text made on demand)

    @property
    def changes(self) -> Dict[str, str]:
        """Every file this step changes, as text."""
        return {**self.texts, **{path: module.code for path, module in self.modules.items()}}


_STALE = object()


class Sources(Mapping):
    """path -> text of the files recipes read, where an edited module's text is generated only when read.

    Recipes that edit the same Python file in turn (four of them edit tasks.py) hand each other the libcst
    module, so the file is parsed once and printed once.
    """

    def __init__(self):
        self._texts: Dict[str, object] = {}
        self._modules: Dict[str, cst.Module] = {}

    def __getitem__(self, path: str) -> Optional[str]:
        text = self._texts[path]
        if text is _STALE:
            text = self._texts[path] = self._modules[path].code
        return text

    def __contains__(self, path) -> bool:  # without printing a module (Mapping's default reads the item)
        return path in self._texts

    def __iter__(self):
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def module(self, path: str) -> Optional[cst.Module]:
        return self._modules.get(path)

    def set_text(self, path: str, text: Optional[str]) -> None:
        self._texts[path] = text
        self._modules.pop(path, None)

    def set_module(self, path: str, module: cst.Module) -> None:
        self._texts[path] = _STALE
        self._modules[path] = module


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
    task: str = "detect"  # detect, segment, pose, obb, classify (+ semantic, depth for yolo26): which stock yaml


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
        module = sources.module(path) if isinstance(sources, Sources) and path else None
        if module is None and (path is None or sources.get(path) is None):
            return Outcome(NOT_NEEDED, "this release has no such file")
        if module is None:
            quick = self.precheck(sources[path], ctx)
            if quick is not None:
                return Outcome(*quick)
        from libcst import ParserSyntaxError

        try:
            module = parse(sources[path]) if module is None else module
        except ParserSyntaxError as e:
            raise RecipeError(f"syntax error at line {e.editor_line}: fix the file first ({e.message})") from None
        new, status, detail = self.transform(module, ctx)
        if status == APPLIED and new is not module:  # transforms return APPLIED only with a changed module
            return Outcome(APPLIED, detail, modules={path: new})
        return Outcome(status, detail)

    def precheck(self, text: str, ctx: Context) -> Optional[Tuple[str, str]]:
        """Optional fast path: (status, detail) when the stdlib `ast` already shows nothing is to be done.

        libcst parses a large file in a tenth of a second, `ast` in a hundredth; recipes whose change is often
        not needed (fixed upstream) say so without the full parse. None means: run `transform`.
        """
        return None

    def transform(self, module: cst.Module, ctx: Context) -> Tuple[cst.Module, str, str]:
        """Return (new module, status, detail). Raise RecipeError when the change cannot be placed."""
        raise NotImplementedError
