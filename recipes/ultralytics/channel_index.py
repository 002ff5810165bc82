"""channel_index — the backbone's four maps take five slots (tutorial step "replace m_ ... ch.append(c2)").

Target: `ultralytics/nn/tasks.py` `parse_model`, every release from 8.0.0 (block variants T0-T5).

Convention (SPEC §3): the backbone is yaml layer 0 and its `c2` is a list. It occupies slots 0-4 of the
layer outputs (slot 0 empty), so every later layer is stored at `i + 4`, and `ch` becomes
`[0, c1, c2, c3, c4]`. Rather than retyping the release's own block (whose text differs in six variants,
and which gained an SPPF fix-up in 8.4.141), three edits keep every original statement:
1. the statements from `m_ = ...` to `t = ...` go into the `else` of `if isinstance(c2, list):`, whose body
   uses the module built in the register branch (`m_ = m; m_.backbone = True`);
2. right after that, `if backbone: i += 4`, so `m_.i`, the printed summary and `save` all use `i + 4`;
3. `ch.append(c2)` goes into the `else` of `if isinstance(c2, list): ch = [0] * (5 - len(c2)) + c2`
   (this also resets `ch` at layer 0, which `if i == 0: ch = []` no longer sees once i is 4).

Already applied: a top-level `if isinstance(c2, list):` in the loop that builds `m_` (edit 1), a use of
`backbone` in the index (the tutorials write `m_.i, m_.f, m_.type = i + 4 if backbone else i, f, t`) or our
`if backbone:` (edit 2), and `ch.append(c2)` no longer a top-level statement of the loop (edit 3).

VALID (after):
    if isinstance(c2, list):
        m_ = m
        m_.backbone = True
    else:
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        t = str(m)[8:-2].replace("__main__.", "")
    if backbone:
        i += 4
    m_.np = sum(x.numel() for x in m_.parameters())
    ...
    if isinstance(c2, list):
        ch = [0] * (5 - len(c2)) + c2
    else:
        ch.append(c2)
INVALID (before): `m_ = m(*args)` on the module instance the register branch built.
"""

from __future__ import annotations

from typing import List

import libcst as cst
from .. import cst_match as m

from .. import ALREADY, APPLIED, Context, ModuleRecipe, RecipeError
from ..cst_anchors import (
    MARK,
    find_index,
    is_assign_to,
    is_call_stmt,
    isinstance_test,
    module_function,
    parse_model_loop,
    replace_within,
    stmt,
    wrap_in_else,
)

_LIST_C2 = isinstance_test("c2", "list")

BUILD = f"""\
if isinstance(c2, list):  {MARK} the backbone was built in its parse_model branch
    m_ = m
    m_.backbone = True
else:
    pass
"""
INDEX = f"""\
if backbone:  {MARK} the backbone's maps fill slots 0-4, so later layers are stored at i + 4
    i += 4
"""
CHANNELS = f"""\
if isinstance(c2, list):  {MARK} five slots after the backbone: [0, c1, c2, c3, c4]
    ch = [0] * (5 - len(c2)) + c2
else:
    pass
"""


def _builds_m_(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.If) and m.matches(node.test, _LIST_C2) and bool(
        m.findall(node.body, m.AssignTarget(m.Name("m_")))
    )


def _index_done(body) -> bool:
    for s in body:
        if isinstance(s, cst.If) and m.matches(s.test, m.Name("backbone")):
            return True
        if isinstance(s, cst.SimpleStatementLine) and m.findall(s, m.AssignTarget(m.Tuple())) and m.findall(
            s, m.Name("backbone")
        ):
            return True  # the tutorials' `m_.i, m_.f, m_.type = i + 4 if backbone else i, f, t`
    return False


class ChannelIndex(ModuleRecipe):
    name = "channel_index"
    step = "store layers after the backbone at i + 4 and pad ch to five slots (the m_ ... ch.append block)"
    role = "tasks"

    def inspect(self, ctx: Context, sources):
        text = sources.get(self.target(ctx) or "")
        if text is None:
            return None
        _, loop = parse_model_loop(module_function(cst.parse_module(text), "parse_model"))
        body = list(loop.body.body)
        return {
            "backbone module": any(_builds_m_(s) for s in body),
            "i + 4 index": _index_done(body),
            "five-slot ch": find_index(body, is_call_stmt("ch", "append")) < 0,
        }

    def transform(self, module: cst.Module, ctx: Context):
        fn = module_function(module, "parse_model")
        k_loop, loop = parse_model_loop(fn)
        body: List[cst.BaseStatement] = list(loop.body.body)
        done = []

        if not any(_builds_m_(s) for s in body):
            start = find_index(body, is_assign_to("m_"))
            end = find_index(body, is_assign_to("t"), max(start, 0))
            if start < 0 or end < 0:
                raise RecipeError(
                    "parse_model's loop has no `m_ = ...` followed by `t = ...`; restore the stock block "
                    "or apply the channel/index step by hand"
                )
            body[start : end + 1] = [wrap_in_else(BUILD, body[start : end + 1])]
            done.append("backbone module")
        if not _index_done(body):
            k = find_index(body, _builds_m_)
            body.insert(k + 1, stmt(INDEX))
            done.append("i + 4 index")
        k = find_index(body, is_call_stmt("ch", "append"))
        if k >= 0:
            body[k] = wrap_in_else(CHANNELS, [body[k]])
            done.append("five-slot ch")
        elif not any(isinstance(s, cst.If) and m.matches(s.test, _LIST_C2) and m.findall(s, m.Name("ch")) for s in body):
            raise RecipeError("parse_model's loop has no `ch.append(c2)`; restore the stock block")

        if not done:
            return module, ALREADY, "backbone module, i + 4 index and five-slot ch present"
        new_loop = loop.with_changes(body=loop.body.with_changes(body=tuple(body)))
        return replace_within(module, fn, loop, new_loop), APPLIED, "added " + ", ".join(done)
