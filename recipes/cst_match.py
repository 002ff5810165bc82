"""Structural patterns over libcst trees: the part of `libcst.matchers` the recipes use, in one small module.

Why not `libcst.matchers` itself: importing it creates about 390 dataclasses (0.15 s on an idle 2-core machine,
0.4-0.6 s under load), more than all the recipes' own work on a release, and `apply` must stay under a second.
The spelling is the same, so a recipe reads as it would with libcst's matchers (`from . import cst_match as m`):

    m.Call(func=m.Name("hasattr") | m.Name("getattr"), args=[m.Arg(m.Name("m")), m.ZeroOrMore()])

- `m.<NodeType>(*args, **fields)`: a node of that libcst type whose given fields match; positional arguments
  are the node's fields in libcst's order (`m.Name("x")` is `value="x"`). A field is matched by a pattern, a
  plain value (equality), a list/tuple (element-wise, `ZeroOrMore()` absorbing any run) or `MatchIfTrue(fn)`.
- `a | b`: either. `matches(node, pattern)`, `findall(tree, pattern)` (pre-order, the tree itself included),
  `replace(tree, pattern, new)` (outermost matches; `new` is a node or `fn(node, {})`).
- `replace_node(root, old, new)`: `root` with the one node `old` (by identity) replaced, rebuilding only the
  nodes on the path to it (libcst's `deep_replace` visits and copies the whole tree).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:  # only in annotations: `m.Tuple` must reach __getattr__, not typing.Tuple
    from typing import Any, Callable, Dict, List, Optional, Tuple


class BaseMatcherNode:
    """Anything that can stand for a node or a field value in a pattern."""

    def __or__(self, other: "BaseMatcherNode") -> "OneOf":
        return OneOf(self, other)

    def test(self, value: Any) -> bool:  # pragma: no cover (every subclass defines it)
        raise NotImplementedError


class NodePattern(BaseMatcherNode):
    def __init__(self, node_type: type, args: Tuple[Any, ...], fields: Dict[str, Any]):
        names = _field_names(node_type)
        if len(args) > len(names):
            raise TypeError(f"{node_type.__name__} has {len(names)} fields, got {len(args)} positional patterns")
        fields = {**dict(zip(names, args)), **fields}
        unknown = set(fields) - set(names)
        if unknown:
            raise TypeError(f"{node_type.__name__} has no field {sorted(unknown)}")
        self.node_type, self.fields = node_type, fields

    def test(self, value: Any) -> bool:
        return isinstance(value, self.node_type) and all(
            _field_matches(getattr(value, k), want) for k, want in self.fields.items())

    def __repr__(self) -> str:
        return f"m.{self.node_type.__name__}({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"


class OneOf(BaseMatcherNode):
    def __init__(self, *options: BaseMatcherNode):
        self.options = options

    def test(self, value: Any) -> bool:
        return any(_field_matches(value, o) for o in self.options)


class MatchIfTrue(BaseMatcherNode):
    def __init__(self, fn: Callable[[Any], bool]):
        self.fn = fn

    def test(self, value: Any) -> bool:
        return bool(self.fn(value))


class ZeroOrMore(BaseMatcherNode):
    """In a sequence pattern: any number (0 included) of elements, each matching `pattern` (default: any)."""

    def __init__(self, pattern: Optional[BaseMatcherNode] = None):
        self.pattern = pattern

    def test(self, value: Any) -> bool:
        return self.pattern is None or _field_matches(value, self.pattern)


def _field_matches(value: Any, want: Any) -> bool:
    if isinstance(want, BaseMatcherNode):
        return want.test(value)
    if isinstance(want, (list, tuple)):
        return isinstance(value, (list, tuple)) and _sequence_matches(list(value), list(want))
    return value == want


def _sequence_matches(items: List[Any], wants: List[Any]) -> bool:
    if not wants:
        return not items
    head = wants[0]
    if isinstance(head, ZeroOrMore):
        # absorb 0, 1, 2, ... leading items (each must match the run's pattern), then match the rest
        for k in range(len(items) + 1):
            if k and not head.test(items[k - 1]):
                return False
            if _sequence_matches(items[k:], wants[1:]):
                return True
        return False
    return bool(items) and _field_matches(items[0], head) and _sequence_matches(items[1:], wants[1:])


def matches(node: Any, pattern: BaseMatcherNode) -> bool:
    return _field_matches(node, pattern)


# --- walking the tree -----------------------------------------------------------------------------------------

_FIELDS: Dict[type, Tuple[str, ...]] = {}
# libcst's dataclass fields are in source order except for these, which are put first in source order
# (decorators, a def's return annotation before its body, a class's bases, `a if test else b`, positional-only
# parameters, `key=value`, `except T as e:`), so that findall lists the nodes in the order libcst's visitors
# meet them (whitespace and punctuation nodes aside; tests/test_cst_match.py compares whole modules)
_SOURCE_ORDER = {
    "FunctionDef": ("leading_lines", "decorators", "asynchronous", "name", "params", "returns"),
    "ClassDef": ("leading_lines", "decorators", "name", "bases", "keywords"),
    "IfExp": ("body", "test"),
    "Arg": ("star", "keyword", "equal"),
    "ExceptHandler": ("type", "name"),
    "Parameters": ("posonly_params", "posonly_ind", "params", "star_arg", "kwonly_params", "star_kwarg"),
}


def _field_names(node_type: type) -> Tuple[str, ...]:
    names = _FIELDS.get(node_type)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(node_type))
        _FIELDS[node_type] = names
    return names


_ORDER: Dict[type, Tuple[str, ...]] = {}


def _walk_order(node: cst.CSTNode) -> Tuple[str, ...]:
    """A node type's fields in source order, worked out once per type (findall calls it for every node)."""
    node_type = type(node)
    order = _ORDER.get(node_type)
    if order is None:
        names = _field_names(node_type)
        first = _SOURCE_ORDER.get(node_type.__name__, ())
        order = _ORDER[node_type] = first + tuple(n for n in names if n not in first)
    return order


def children(node: cst.CSTNode):
    """(field name, index or None, child node) for every direct child node, in source order."""
    for name in _walk_order(node):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            yield name, None, value
        elif isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                if isinstance(item, cst.CSTNode):
                    yield name, k, item


def findall(tree: cst.CSTNode, pattern: BaseMatcherNode) -> List[cst.CSTNode]:
    found: List[cst.CSTNode] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if pattern.test(node):
            found.append(node)
        stack.extend(reversed([c for _, _, c in children(node)]))
    return found


def _with_child(node: cst.CSTNode, name: str, index: Optional[int], new: cst.CSTNode) -> cst.CSTNode:
    if index is None:
        return node.with_changes(**{name: new})
    items = list(getattr(node, name))
    items[index] = new
    return node.with_changes(**{name: tuple(items)})


def replace_node(root: cst.CSTNode, old: cst.CSTNode, new: cst.CSTNode) -> cst.CSTNode:
    path = _path_to(root, old)
    if path is None:
        raise ValueError(f"{type(old).__name__} is not inside this {type(root).__name__}")
    for parent, name, index in reversed(path):
        new = _with_child(parent, name, index, new)
    return new


def _path_to(root: cst.CSTNode, target: cst.CSTNode) -> Optional[List[Tuple[cst.CSTNode, str, Optional[int]]]]:
    if root is target:
        return []
    for name, index, child in children(root):
        rest = _path_to(child, target)
        if rest is not None:
            return [(root, name, index)] + rest
    return None


def replace(tree: cst.CSTNode, pattern: BaseMatcherNode, new: Any) -> cst.CSTNode:
    if pattern.test(tree):
        return new(tree, {}) if callable(new) else new
    changes: Dict[str, Any] = {}
    for name, index, child in list(children(tree)):
        out = replace(child, pattern, new)
        if out is child:
            continue
        if index is None:
            changes[name] = out
        else:
            items = list(changes.get(name, getattr(tree, name)))
            items[index] = out
            changes[name] = tuple(items)
    return tree.with_changes(**changes) if changes else tree


def __getattr__(name: str) -> Callable[..., NodePattern]:
    """`m.Name`, `m.Call`, ...: a pattern maker for every libcst node type."""
    node_type = getattr(cst, name, None)
    if not (isinstance(node_type, type) and issubclass(node_type, cst.CSTNode)):
        raise AttributeError(f"libcst has no node type {name!r}")

    def make(*args: Any, **fields: Any) -> NodePattern:
        return NodePattern(node_type, args, fields)

    make.__name__ = name
    return make


__all__ = ("BaseMatcherNode", "MatchIfTrue", "OneOf", "ZeroOrMore", "findall", "matches", "replace",
           "replace_node", "children")
