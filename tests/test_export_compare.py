"""The ONNX check for top-k heads (RT-DETR, YOLO26 end-to-end): rows are detections in score order, so the
comparison is by set. Small arrays made here: the export tests in test_train.py run the real exporter."""

from __future__ import annotations

import numpy as np

from patcher.train_child import same_detections


def detections(k=300, seed=0):
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 64, size=(1, k, 4))
    scores = np.sort(rng.uniform(0.01, 0.9, size=(1, k, 1)), axis=1)[:, ::-1]
    classes = rng.integers(0, 80, size=(1, k, 1)).astype(float)
    return np.concatenate([boxes, scores, classes], axis=-1).astype(np.float32)


def test_reordered_rows_are_the_same_detections():
    ref = detections()
    out = ref[:, np.random.default_rng(1).permutation(ref.shape[1])]
    assert np.abs(out - ref).max() > 1  # an elementwise comparison would fail
    res = same_detections(out, ref)
    assert res["equal"] and res["matched"] == res["compared"] == 299 and res["at_boundary"] == 1


def test_a_moved_box_is_found():
    ref = detections()
    out = ref.copy()
    out[0, 10, 2] += 0.5  # one box of a clearly kept detection
    res = same_detections(out, ref)
    assert not res["equal"] and res["matched"] == res["compared"] - 1 and res["max_abs_diff"] >= 0.5


def test_a_changed_class_or_score_is_found():
    ref = detections()
    out = ref.copy()
    out[0, 5, 5] = (out[0, 5, 5] + 1) % 80
    assert not same_detections(out, ref)["equal"]
    out = ref.copy()
    out[0, 7, 4] += 1e-2
    assert not same_detections(out, ref)["equal"]


def test_ties_at_the_kth_score_may_keep_another_pair():
    ref = detections()
    ref[0, -3:, 4] = ref[0, -1, 4]  # three detections tied at the k-th score
    out = ref.copy()
    out[0, -1, :4] += 7  # another tied pair was kept in their place
    out[0, -1, 5] = (out[0, -1, 5] + 3) % 80
    res = same_detections(out, ref)
    assert res["equal"] and res["at_boundary"] == 3 and res["compared"] == 297
