"""Structural anchors shared by the recipes: find a function, its loop, a statement by what it assigns.

Everything here matches node types and names, never text, quotes, comments or positions in a body, because
those change between releases (see ../shared/ref/ultralytics-versions.md, "Anchors that hold in every version").
"""

from __future__ import annotations

import ast
import textwrap
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import libcst as cst
from . import cst_match as m

from . import RecipeError

MARK = "# mbpatch:"  # every comment mbpatch writes starts with this, so a reader can find our edits


def code_of(node: cst.CSTNode) -> str:
    """The source text of one node (an expression, a dotted name), as the file spells it."""
    return cst.Module([]).code_for_node(node)


def as_ast(node: cst.CSTNode) -> ast.AST:
    """The stdlib `ast` of one libcst statement (a class, a function): a recipe writes its "already applied"
    test once, for `ast`, and runs it on the file before any libcst parse (precheck, doctor) and on the node
    its transform holds."""
    return ast.parse(textwrap.dedent(code_of(node))).body[0]


def module_function(module: cst.Module, name: str) -> cst.FunctionDef:
    found = [s for s in module.body if isinstance(s, cst.FunctionDef) and s.name.value == name]
    if len(found) != 1:
        raise RecipeError(f"expected one module-level `def {name}`, found {len(found)}: restore it or edit by hand")
    return found[0]


def class_def(module: cst.Module, name: str) -> Optional[cst.ClassDef]:
    for s in module.body:
        if isinstance(s, cst.ClassDef) and s.name.value == name:
            return s
    return None


def methods(cls: cst.ClassDef) -> List[cst.FunctionDef]:
    return [s for s in cls.body.body if isinstance(s, cst.FunctionDef)]


def name_of_assign(stmt: cst.CSTNode) -> Optional[str]:
    """`x = ...` (one Name target) -> "x"; anything else -> None."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        node = stmt.body[0]
        if isinstance(node, cst.Assign) and len(node.targets) == 1:
            t = node.targets[0].target
            if isinstance(t, cst.Name):
                return t.value
        if isinstance(node, cst.AugAssign) and isinstance(node.target, cst.Name):
            return node.target.value
    return None


def find_index(body: Sequence[cst.CSTNode], pred: Callable[[cst.CSTNode], bool], start: int = 0) -> int:
    for k in range(start, len(body)):
        if pred(body[k]):
            return k
    return -1


def is_assign_to(name: str) -> Callable[[cst.CSTNode], bool]:
    return lambda s: name_of_assign(s) == name


def is_call_stmt(obj: str, attr: str) -> Callable[[cst.CSTNode], bool]:
    """`obj.attr(...)` as an expression statement, e.g. `ch.append(c2)`."""
    matcher = m.SimpleStatementLine(
        body=[m.Expr(value=m.Call(func=m.Attribute(value=m.Name(obj), attr=m.Name(attr))))]
    )
    return lambda s: m.matches(s, matcher)


def mentions(node: cst.CSTNode, name: str) -> bool:
    return bool(m.findall(node, m.Name(name)))


def isinstance_test(var: str, typ: str) -> m.BaseMatcherNode:
    """`isinstance(var, typ)`."""
    return m.Call(func=m.Name("isinstance"), args=[m.Arg(m.Name(var)), m.Arg(m.Name(typ))])


def top_level_if(body: Sequence[cst.CSTNode], test: m.BaseMatcherNode) -> List[cst.If]:
    return [s for s in body if isinstance(s, cst.If) and m.matches(s.test, test)]


def replace_within(module: cst.Module, top: cst.CSTNode, old: cst.CSTNode, new: cst.CSTNode) -> cst.Module:
    """Replace `old` (found inside the top-level statement `top`) without re-cloning the whole module."""
    new_top = m.replace_node(top, old, new)
    return module.with_changes(body=tuple(new_top if s is top else s for s in module.body))


def stmt(code: str) -> cst.BaseStatement:
    return cst.parse_statement(code)


def wrap_in_else(
    new_if_code: str, moved: Sequence[cst.BaseStatement]
) -> cst.If:
    """Parse `new_if_code` (an if/else whose else body is `pass`) and put `moved` in its else body.

    The moved statements keep their own text; their first leading blank lines/comments move up to the `if`.
    """
    node = stmt(new_if_code)
    assert isinstance(node, cst.If) and isinstance(node.orelse, cst.Else)
    first = moved[0]
    leading = getattr(first, "leading_lines", ())
    moved = [first.with_changes(leading_lines=())] + list(moved[1:])
    orelse = node.orelse.with_changes(body=node.orelse.body.with_changes(body=tuple(moved)))
    return node.with_changes(orelse=orelse, leading_lines=leading)


def replace_span(
    block: cst.IndentedBlock, start: int, end: int, new: Iterable[cst.BaseStatement]
) -> cst.IndentedBlock:
    """Replace body[start:end] of a block."""
    body = list(block.body)
    return block.with_changes(body=tuple(body[:start]) + tuple(new) + tuple(body[end:]))


# --- parse_model -------------------------------------------------------------------------------------------


def parse_model_loop(fn: cst.FunctionDef) -> Tuple[int, cst.For]:
    """The `for i, (f, n, m, args) in enumerate(...)` loop of parse_model: (index in body, node)."""
    loop_matcher = m.For(
        target=m.Tuple(
            elements=[
                m.Element(m.Name("i")),
                m.Element(m.Tuple(elements=[m.Element(m.Name("f")), m.Element(m.Name("n")), m.Element(m.Name("m")), m.Element(m.Name("args"))])),
            ]
        ),
        iter=m.Call(func=m.Name("enumerate")),
    )
    body = fn.body.body
    found = [(k, s) for k, s in enumerate(body) if m.matches(s, loop_matcher)]
    if len(found) != 1:
        raise RecipeError(
            "parse_model has no `for i, (f, n, m, args) in enumerate(...)` layer loop at its top level "
            "(was it restructured by hand?); restore the stock loop or apply this step by hand"
        )
    return found[0]


# --- forward loops (_predict_once / RTDETRDetectionModel.predict) ------------------------------------------

BACKBONE_TEST = m.Call(func=m.Name("hasattr") | m.Name("getattr"), args=[m.Arg(m.Name("m")), m.Arg(m.SimpleString()), m.ZeroOrMore()])


def _is_backbone_test(node: cst.BaseExpression) -> bool:
    if not m.matches(node, BACKBONE_TEST):
        return False
    s = node.args[1].value
    return isinstance(s, cst.SimpleString) and s.evaluated_value == "backbone"


def loop_is_backbone_aware(loop: cst.For) -> bool:
    return any(isinstance(s, cst.If) and _is_backbone_test(s.test) for s in loop.body.body)


BACKBONE_FORWARD = '''\
if hasattr(m, "backbone"):  # mbpatch: the backbone returns its feature maps, which fill five slots of y
    x = m(x)
    x = [None] * (5 - len(x)) + list(x)  # slot 0 stays empty when it returned four maps
    y.extend(x[j] if j in self.save else None for j in range(len(x)))
    x = x[-1]  # the stride-32 map goes on to the next layer
else:
    pass
'''


def make_loop_backbone_aware(loop: cst.For) -> cst.For:
    """Replace `x = m(x)` ... `y.append(...)` in a forward loop with a branch for list-returning backbones."""
    body = loop.body.body
    run = find_index(
        body,
        lambda s: m.matches(
            s,
            m.SimpleStatementLine(
                body=[m.Assign(targets=[m.AssignTarget(m.Name("x"))], value=m.Call(func=m.Name("m"), args=[m.Arg(m.Name("x"))]))]
            ),
        ),
    )
    if run < 0:
        raise RecipeError("the forward loop has no `x = m(x)` statement; restore the stock loop or edit by hand")
    save = find_index(body, is_call_stmt("y", "append"), run)
    if save < 0:
        raise RecipeError("the forward loop has no `y.append(...)` after `x = m(x)`; restore the stock loop")
    new_if = wrap_in_else(BACKBONE_FORWARD, body[run : save + 1])
    return loop.with_changes(body=replace_span(loop.body, run, save + 1, [new_if]))


def forward_loop(fn: cst.FunctionDef, sliced: bool) -> Optional[cst.For]:
    """`for m in self.model:` (sliced=False) or `for m in self.model[:-1]:` (sliced=True) in a method."""
    model = m.Attribute(value=m.Name("self"), attr=m.Name("model"))
    it = m.Subscript(value=model) if sliced else model
    loops = m.findall(fn, m.For(target=m.Name("m"), iter=it))
    return loops[0] if loops else None
