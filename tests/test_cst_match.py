"""recipes/cst_match.py against libcst.matchers, the implementation it stands in for (apply imports it to
stay under a second; see its docstring). Each pattern the recipes use finds the same nodes, in the same order,
in real release sources, and replace / replace_node give the same modules as libcst's own."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as lm
import pytest

from conftest import unpacked
from mbpatch.recipes import cst_match as m

SOURCES = [("ultralytics", "8.4.190", "ultralytics", "nn/tasks.py"),
           ("ultralytics", "8.4.190", "ultralytics", "engine/trainer.py"),
           ("yolov5", "7.0.14", "yolov5", "models/yolo.py")]


def both(build):
    """The same pattern built with each library: build(lib) -> pattern."""
    return build(m), build(lm)


PATTERNS = {
    "name": lambda x: x.Name("m"),
    "attribute": lambda x: x.Attribute(value=x.Name("self"), attr=x.Name("model")),
    "call with args": lambda x: x.Call(func=x.Name("isinstance"), args=[x.Arg(x.Name("m")), x.Arg()]),
    "one of": lambda x: x.Call(func=x.Name("hasattr") | x.Name("getattr"), args=[x.Arg(), x.Arg(x.SimpleString()), x.ZeroOrMore()]),
    "zero or more around": lambda x: x.Call(args=[x.ZeroOrMore(), x.Arg(keyword=x.Name("verbose")), x.ZeroOrMore()]),
    "assign": lambda x: x.SimpleStatementLine(body=[x.Assign(targets=[x.AssignTarget(x.Name("c2"))])]),
    "for over tuple": lambda x: x.For(target=x.Tuple()),
    "comparison in": lambda x: x.Comparison(comparisons=[x.ComparisonTarget(x.In())]),
    "integer": lambda x: x.Integer("0"),
    "match if true": lambda x: x.Name(value=x.MatchIfTrue(lambda v: v.startswith("_"))),
    "every name": lambda x: x.Name(),  # the walk order over whole modules: decorators, bases, returns, ...
    "every call": lambda x: x.Call(),
}


@pytest.fixture(scope="module")
def modules():
    out = {}
    for dist, version, package, rel in SOURCES:
        path = unpacked(dist, version, package) / package / rel
        out[f"{dist}-{version}/{rel}"] = cst.parse_module(path.read_text(encoding="utf-8"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_findall_and_matches_agree_with_libcst(modules, kind):
    ours, theirs = both(PATTERNS[kind])
    total = 0
    for name, module in modules.items():
        a, b = m.findall(module, ours), lm.findall(module, theirs)
        assert [id(n) for n in a] == [id(n) for n in b], name
        total += len(a)
        for node in b[:20]:
            assert m.matches(node, ours)
    assert total > 0, f"{kind}: the pattern finds nothing in the sources, so the comparison shows nothing"


def test_a_field_that_does_not_exist_is_an_error():
    with pytest.raises(TypeError):
        m.Name(nope="x")
    with pytest.raises(AttributeError):
        m.NotANodeType()


def test_replace_agrees_with_libcst(modules):
    module = modules["ultralytics-8.4.190/nn/tasks.py"]
    pat_ours, pat_theirs = both(lambda x: x.Arg(keyword=x.Name("verbose")))
    ours = m.replace(module, pat_ours, lambda node, _: node.with_changes(value=cst.Name("False")))
    theirs = lm.replace(module, pat_theirs, lambda node, _: node.with_changes(value=cst.Name("False")))
    assert ours.code == theirs.code != module.code


def test_replace_node_agrees_with_deep_replace(modules):
    module = modules["yolov5-7.0.14/models/yolo.py"]
    target = lm.findall(module, lm.Call(func=lm.Name("isinstance")))[-1]
    new = target.with_changes(func=cst.Name("issubclass"))
    ours = m.replace_node(module, target, new)
    assert ours.code == module.deep_replace(target, new).code != module.code
    with pytest.raises(ValueError):
        m.replace_node(module, cst.Name("elsewhere"), new)
