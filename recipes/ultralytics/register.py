"""register — make parse_model know the backbone (tutorial step "edit parse_model", part 1).

Target: `ultralytics/nn/tasks.py`, every release from 8.0.0.

What the tutorials do by hand, and this recipe does by structure:
1. import the backbone names into tasks.py (`from ultralytics.nn.AddModules import ...` after the last
   top-level import), so the yaml names resolve: parse_model looks names up in the tasks.py globals
   (`eval(m)` up to 8.0.49, `globals()[m]` after);
2. `backbone = False` once, before the layer loop (it stays True for every layer after the backbone);
3. `t = m` as the loop's first statement: the yaml name, shown in the summary for the backbone row;
4. a first branch of the dispatch chain: `if m in {<names>}: m = m(*args); c2 = m.width_list; backbone = True`.
   The original chain becomes its `elif`s unchanged. The chain is found as the first `if m in ...` after
   `n = n_ = ...`, because from 8.4.67 an `if restricted and ...` comes earlier in the loop.

Already applied: each of the four parts is recognised on its own, whoever wrote it (mbpatch, a tutorial
followed by hand): a star or named import from `AddModules`, an assignment to `backbone` before the loop,
`t = m` in the loop, and a chain branch that sets `backbone = True` (missing names are added to its set).

VALID (after):
    backbone = False
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        t = m
        m = getattr(torch.nn, m[3:]) if "nn." in m else globals()[m]
        ...
        n = n_ = max(round(n * depth), 1) if n > 1 else n
        if m in {MobileNetV2, mobilenetv2}:
            m = m(*args)
            c2 = m.width_list
            backbone = True
        elif m in {Classify, Conv, ...}:
INVALID (before): the stock loop, where `MobileNetV2` raises KeyError in `globals()[m]`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import libcst as cst
import libcst.matchers as m

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import MARK, find_index, is_assign_to, module_function, parse_model_loop, replace_within, stmt


def _addmodules_import(node: cst.CSTNode) -> bool:
    if not (isinstance(node, cst.SimpleStatementLine) and isinstance(node.body[0], cst.ImportFrom)):
        return False
    imp = node.body[0]
    mod = cst.Module([]).code_for_node(imp.module) if imp.module else ""
    return mod.split(".")[-1] == "AddModules"


def _imported_names(imp: cst.ImportFrom) -> Tuple[bool, List[str]]:
    if isinstance(imp.names, cst.ImportStar):
        return True, []
    return False, [a.name.value for a in imp.names if isinstance(a.name, cst.Name)]


def _ensure_import(module: cst.Module, package: str, names: Sequence[str]) -> Tuple[cst.Module, bool]:
    body = list(module.body)
    existing = [k for k, s in enumerate(body) if _addmodules_import(s)]
    for k in existing:
        star, have = _imported_names(body[k].body[0])
        if star or all(n in have for n in names):
            return module, False
    if existing:  # extend the first named import with the missing names
        k = existing[0]
        imp = body[k].body[0]
        _, have = _imported_names(imp)
        extra = [cst.ImportAlias(cst.Name(n)) for n in names if n not in have]
        aliases = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in imp.names] + extra
        aliases = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for a in aliases]
        new_imp = imp.with_changes(names=tuple(aliases), lpar=None, rpar=None)
        body[k] = body[k].with_changes(body=[new_imp])
        return module.with_changes(body=tuple(body)), True
    # after the last top-level import that precedes the first def/class
    last = -1
    for k, s in enumerate(body):
        if isinstance(s, (cst.FunctionDef, cst.ClassDef)):
            break
        if isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], (cst.Import, cst.ImportFrom)):
            last = k
    line = stmt(f"from {package}.nn.AddModules import {', '.join(names)}  {MARK} backbones added by mbpatch\n")
    body.insert(last + 1, line)
    return module.with_changes(body=tuple(body)), True


def _chain_start(loop_body: Sequence[cst.CSTNode]) -> int:
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


def _sets_backbone(branch: cst.If) -> bool:
    return bool(
        m.findall(branch.body, m.Assign(targets=[m.AssignTarget(m.Name("backbone"))], value=m.Name("True")))
    )


def _chain_branches(first: cst.If):
    node = first
    while isinstance(node, cst.If):
        yield node
        node = node.orelse


def _name_elements(collection: cst.BaseExpression) -> List[str]:
    if isinstance(collection, (cst.Set, cst.Tuple, cst.List)):
        return [e.value.value for e in collection.elements if isinstance(e.value, cst.Name)]
    return []


class Register(ModuleRecipe):
    name = "register"
    step = "import the backbone into tasks.py and add its parse_model branch (backbone = True, c2 = width_list)"
    role = "tasks"

    def inspect(self, ctx: Context, sources):
        text = sources.get(self.target(ctx) or "")
        if text is None:
            return None
        module = cst.parse_module(text)
        fn = module_function(module, "parse_model")
        k_loop, loop = parse_model_loop(fn)
        body = list(loop.body.body)
        t_m = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name("t"))], value=m.Name("m"))])
        return {
            "import": any(_addmodules_import(s) for s in module.body),
            "flag": any(is_assign_to("backbone")(s) for s in fn.body.body[:k_loop]),
            "t = m": any(m.matches(s, t_m) for s in body),
            "branch": any(_sets_backbone(b) for b in _chain_branches(body[_chain_start(body)])),
        }

    def transform(self, module: cst.Module, ctx: Context):
        names = list(ctx.backbone.names)
        done: List[str] = []

        module, changed = _ensure_import(module, ctx.checkout.package.name, names)
        if changed:
            done.append("import")

        fn = module_function(module, "parse_model")
        k_loop, loop = parse_model_loop(fn)
        fn_body = list(fn.body.body)
        loop_body = list(loop.body.body)

        if not any(is_assign_to("backbone")(s) for s in fn_body[:k_loop]):
            fn_body.insert(k_loop, stmt(f"backbone = False  {MARK} becomes True at the backbone layer\n"))
            k_loop += 1
            done.append("flag")

        if not any(
            m.matches(s, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(m.Name("t"))], value=m.Name("m"))]))
            for s in loop_body
        ):
            loop_body.insert(0, stmt(f"t = m  {MARK} the yaml name, shown in the summary for a backbone\n"))
            done.append("t = m")

        k = _chain_start(loop_body)
        chain = loop_body[k]
        ours = [b for b in _chain_branches(chain) if _sets_backbone(b)]
        if ours:
            branch = ours[0]
            have = _name_elements(branch.test.comparisons[0].comparator)
            missing = [n for n in names if n not in have]
            if missing:
                if not isinstance(branch.test.comparisons[0].comparator, (cst.Set, cst.Tuple, cst.List)):
                    raise RecipeError(
                        "the backbone branch of parse_model does not test a literal set; add "
                        f"{', '.join(missing)} to it by hand"
                    )
                coll = branch.test.comparisons[0].comparator
                elems = [e.with_changes(comma=cst.MaybeSentinel.DEFAULT) for e in coll.elements]
                elems += [cst.Element(cst.Name(n)) for n in missing]
                new_test = branch.test.with_changes(
                    comparisons=[branch.test.comparisons[0].with_changes(comparator=cst.Set(elements=elems))]
                )
                loop_body[k] = chain.deep_replace(branch.test, new_test)
                done.append("names " + ", ".join(missing))
        else:
            new = stmt(
                f"if m in {{{', '.join(names)}}}:  {MARK} a backbone returns a list of feature maps\n"
                "    m = m(*args)\n    c2 = m.width_list\n    backbone = True\n"
            )
            loop_body[k] = new.with_changes(orelse=chain.with_changes(leading_lines=()), leading_lines=chain.leading_lines)
            done.append("branch")

        if not done:
            return module, ALREADY, "import, flag, yaml name and branch present"
        loop = loop.with_changes(body=loop.body.with_changes(body=tuple(loop_body)))
        fn_body[k_loop] = loop
        new_fn = fn.with_changes(body=fn.body.with_changes(body=tuple(fn_body)))
        module = replace_within(module, fn, fn, new_fn)
        return module, APPLIED, "added " + "; ".join(done)
