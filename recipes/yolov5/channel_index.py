"""channel_index — the backbone's four maps take five slots (tutorial step "replace the m_ ... ch.append(c2) block").

Target: `parse_model` in `models/yolo.py`, every version. Its loop body has the same 13-statement skeleton
in all of them (ref/yolov5-versions.md, anchors A6/A7): `m_ = ...` (#4) and `t = ...` (#5) next to each
other, `if i == 0: ch = []` (#11) and `ch.append(c2)` (#12). The edits are the Ultralytics recipe's, run on
this file (the code is shared, see recipes/ultralytics/channel_index.py):
1. `m_ = ...` and `t = ...` go into the `else` of `if isinstance(c2, list):`, whose body takes the module
   the register branch built (`m_ = m; m_.backbone = True`);
2. `if backbone: i += 4` right after, so `m_.i`, the printed row and `save` use `i + 4`;
3. `ch.append(c2)` goes into the `else` of `if isinstance(c2, list): ch = [0] * (5 - len(c2)) + c2`, which
   also resets `ch` at the backbone (the stock `if i == 0: ch = []` no longer sees i == 0 there).

Already applied: a top-level `if isinstance(c2, list):` that builds `m_`, a use of `backbone` in the index
(or our `if backbone:`), and no top-level `ch.append(c2)` left.
Not needed: the per-block style (`--style blocks`).

VALID (after):  if isinstance(c2, list):\n    m_ = m\n    m_.backbone = True\nelse:\n    m_ = nn.Sequential(...) if n > 1 else m(*args)
INVALID: `m_ = m(*args)` calls the backbone instance the register branch built, on no input.
"""

from __future__ import annotations

from .. import Context
from ..ultralytics.channel_index import ChannelIndex as _UltralyticsChannelIndex
from .layout import BACKBONE, not_this_style


class ChannelIndex(_UltralyticsChannelIndex):
    name = "channel_index"
    step = "store layers after the backbone at i + 4 and pad ch to five slots (the m_ ... ch.append block of parse_model)"
    role = "yolo"
    kinds = ("yolov5",)

    def applies(self, ctx: Context):
        return not_this_style(ctx, BACKBONE) or None
