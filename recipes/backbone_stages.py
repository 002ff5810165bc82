"""Where the stride 8/16/32 stages of a stock yaml backbone end: shared by the Ultralytics and YOLOv5 yaml writers.

Pure data: the caller passes its project's stride rule for a row (which modules down-sample, by how much) and the
modules that may trail the last stage (SPPF, C2PSA); each caller words its own refusal.
"""

from __future__ import annotations

from typing import Callable, Collection, Dict, List, Sequence, Tuple


def last_row_per_stride(backbone: Sequence, tail: Collection[str], row_stride: Callable) -> Tuple[Dict[int, int], List[int]]:
    """({stride: last stock row at that stride}, [the trailing rows whose module is in `tail`])."""
    k_tail = len(backbone)
    while k_tail > 0 and backbone[k_tail - 1][2] in tail:
        k_tail -= 1
    stride, last = 1, {}
    for k, row in enumerate(backbone[:k_tail]):
        stride *= row_stride(row)
        last[stride] = k
    return last, list(range(k_tail, len(backbone)))
