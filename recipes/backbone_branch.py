"""The parse_model edits both register recipes make (Ultralytics `tasks.py` and YOLOv5 `models/yolo.py`).

Both releases' parse_model share the same loop skeleton: `for i, (f, n, m, args) in enumerate(...)`, the
depth gain `n = n_ = ...`, then the dispatch chain `if m in {...}: ... elif ...`. Each edit below is
recognised on its own, whoever made it (mbpatch, a tutorial followed by hand):
- `backbone = False` once, before the layer loop;
- `t = m` as the loop's first statement (the yaml name, shown in the summary for the backbone row);
- a first chain branch `if m in {<names>}: m = m(*args); c2 = m.width_list; backbone = True` (an existing
  branch that sets `backbone = True` gets the missing names added to its set instead).
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import libcst as cst
from . import cst_match as m

from . import RecipeError
from .cst_anchors import MARK, find_index, is_assign_to, module_function, parse_model_loop, replace_within, stmt

T_IS_M = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name("t"))], value=m.Name("m"))])
BRANCH = """\
if m in {{{names}}}:  {mark} a backbone returns a list of feature maps
    m = m(*args)
    c2 = m.width_list
    backbone = True
"""


def chain_start(loop_body: Sequence[cst.CSTNode]) -> int:
    """Index of the dispatch chain: the first `if m in ...` after `n = n_ = ...` (not the first If: from
    Ultralytics 8.4.67 an `if restricted and ...` comes earlier in the loop)."""
    nn = find_index(
        loop_body,
        lambda s: isinstance(s, cst.SimpleStatementLine)
        and isinstance(s.body[0], cst.Assign)
        and [t.target.value for t in s.body[0].targets if isinstance(t.target, cst.Name)] == ["n", "n_"],
    )
    if nn < 0:
        raise RecipeError("parse_model's loop has no `n = n_ = ...` depth-gain statement; restore it")
    k = find_index(
        loop_body,
        lambda s: isinstance(s, cst.If)
        and m.matches(s.test, m.Comparison(left=m.Name("m"), comparisons=[m.ComparisonTarget(operator=m.In())])),
        nn + 1,
    )
    if k < 0:
        raise RecipeError("parse_model's loop has no `if m in ...` dispatch chain after `n = n_ = ...`; restore it")
    return k


def chain_branches(first: cst.If) -> Iterator[cst.If]:
    node = first
    while isinstance(node, cst.If):
        yield node
        node = node.orelse


def sets_backbone(branch: cst.If) -> bool:
    return bool(m.findall(branch.body, m.Assign(targets=[m.AssignTarget(m.Name("backbone"))], value=m.Name("True"))))


def name_elements(collection: cst.BaseExpression) -> List[str]:
    if isinstance(collection, (cst.Set, cst.Tuple, cst.List)):
        return [e.value.value for e in collection.elements if isinstance(e.value, cst.Name)]
    return []


def add_names(chain: cst.If, branch: cst.If, names: List[str]) -> cst.If:
    """Add `names` to the literal collection `branch` tests (`if m in {...}`), keeping its other elements."""
    coll = branch.test.comparisons[0].comparator
    if not isinstance(coll, (cst.Set, cst.Tuple, cst.List)):
        raise RecipeError(f"the backbone branch of parse_model does not test a literal set; add {', '.join(names)} by hand")
    elems = [e.with_changes(comma=cst.MaybeSentinel.DEFAULT) for e in coll.elements]
    elems += [cst.Element(cst.Name(n)) for n in names]
    new_test = branch.test.with_changes(comparisons=[branch.test.comparisons[0].with_changes(comparator=cst.Set(elements=elems))])
    return m.replace_node(chain, branch.test, new_test)


def state(module: cst.Module) -> dict:
    """Which of the three edits parse_model has (for doctor's applied / partial / absent)."""
    fn = module_function(module, "parse_model")
    k_loop, loop = parse_model_loop(fn)
    body = list(loop.body.body)
    return {
        "flag": any(is_assign_to("backbone")(s) for s in fn.body.body[:k_loop]),
        "t = m": any(m.matches(s, T_IS_M) for s in body),
        "branch": any(sets_backbone(b) for b in chain_branches(body[chain_start(body)])),
    }


def ensure_backbone_branch(module: cst.Module, names: Sequence[str]) -> Tuple[cst.Module, List[str]]:
    """Make the three edits that are missing; return the new module and what was done."""
    fn = module_function(module, "parse_model")
    k_loop, loop = parse_model_loop(fn)
    fn_body = list(fn.body.body)
    loop_body = list(loop.body.body)
    done: List[str] = []
    if not any(is_assign_to("backbone")(s) for s in fn_body[:k_loop]):
        fn_body.insert(k_loop, stmt(f"backbone = False  {MARK} becomes True at the backbone layer\n"))
        k_loop += 1
        done.append("flag")
    if not any(m.matches(s, T_IS_M) for s in loop_body):
        loop_body.insert(0, stmt(f"t = m  {MARK} the yaml name, shown in the summary for a backbone\n"))
        done.append("t = m")
    k = chain_start(loop_body)
    chain = loop_body[k]
    ours = [b for b in chain_branches(chain) if sets_backbone(b)]
    if ours:
        missing = [n for n in names if n not in name_elements(ours[0].test.comparisons[0].comparator)]
        if missing:
            loop_body[k] = add_names(chain, ours[0], missing)
            done.append("names " + ", ".join(missing))
    else:
        new = stmt(BRANCH.format(names=", ".join(names), mark=MARK))
        loop_body[k] = new.with_changes(orelse=chain.with_changes(leading_lines=()), leading_lines=chain.leading_lines)
        done.append("branch")
    if not done:
        return module, done
    loop = loop.with_changes(body=loop.body.with_changes(body=tuple(loop_body)))
    fn_body[k_loop] = loop
    new_fn = fn.with_changes(body=fn.body.with_changes(body=tuple(fn_body)))
    return replace_within(module, fn, fn, new_fn), done
