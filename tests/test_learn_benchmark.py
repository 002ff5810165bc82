"""benchmarks/learn.py's bookkeeping (no training): rows are kept per configuration, a re-run skips the rows done
for the same configuration only, and the markdown is rewritten between its markers without touching the rest.
Also: the generated labels are exact (no object hidden behind another, none outside the image)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _learn():
    spec = importlib.util.spec_from_file_location("_mbpatch_learn_benchmark", ROOT / "benchmarks" / "learn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _row(learn, config, family, backbone, m=0.5):
    return {"config_hash": learn.config_hash(config), "config": config, "family": family, "backbone": backbone,
            "variant": learn.variant(backbone), "params": 1234567, "map50_95": m, "map50": m + 0.2, "epochs": 40,
            "wall_s": 300.0, "torch_threads": 1, "load_avg_1_5_15": {"before": [5.0, 5, 5], "after": [6.0, 6, 6]},
            "versions": {}, "machine": "x", "finished_utc": "2026-12-07 22:00"}


def test_rows_are_kept_per_configuration_and_a_rerun_skips_only_those_done(tmp_path):
    learn = _learn()
    results, out = tmp_path / "learn-results.json", tmp_path / "RESULTS-learn.md"
    out.write_text("# Title\n\nwritten by hand, above\n\n" + learn.BEGIN + "\nold table\n" + learn.END + "\n\nand below\n")
    other = dict(learn.CONFIG, epochs=learn.CONFIG["epochs"] + 1)
    assert learn.config_hash(other) != learn.config_hash(learn.CONFIG)
    assert learn.config_hash(json.loads(json.dumps(learn.CONFIG))) == learn.config_hash(learn.CONFIG)
    learn.append_row(results, _row(learn, learn.CONFIG, "yolov8", "stock"))
    learn.append_row(results, _row(learn, other, "yolov8", "mobilenetv2_050"))
    learn.append_row(results, _row(learn, learn.CONFIG, "yolov8", "mobilenetv2_050_wide", 0.25))
    rows = learn.read_rows(results)
    assert [r["backbone"] for r in rows] == ["stock", "mobilenetv2_050", "mobilenetv2_050_wide"]

    todo = learn.pending(rows, learn.config_hash(learn.CONFIG), ["yolov8", "yolo11"],
                         ["stock", "mobilenetv2_050", "mobilenetv2_050_wide"])
    # mobilenetv2_050 was run under another configuration only: it is still to run under this one
    assert todo == [("yolov8", "mobilenetv2_050"), ("yolo11", "stock"), ("yolo11", "mobilenetv2_050"),
                    ("yolo11", "mobilenetv2_050_wide")]

    learn.write_markdown(out, rows, list(learn.FIRST))
    text = out.read_text()
    assert text.startswith("# Title\n\nwritten by hand, above\n\n") and text.endswith("\n\nand below\n")
    assert "old table" not in text and text.count(learn.BEGIN) == text.count(learn.END) == 1
    ours = text.split("### Configuration " + learn.config_hash(learn.CONFIG))[1].split("### ")[0]
    assert "| yolov8 | mobilenetv2_050_wide | wide taps (SSDLite) | 1,234,567 | 0.250 | 0.450 |" in ours
    assert "| yolov8 | mobilenetv2_050 |" not in ours  # that row belongs to the other configuration's table


def test_generated_labels_are_inside_the_image_and_do_not_overlap(tmp_path):
    learn = _learn()
    config = dict(learn.CONFIG, train=40, val=8)
    data = json.loads(learn.make_dataset(tmp_path, config).read_text())
    assert data["nc"] == config["classes"] == len(data["names"])
    count = 0
    for label in sorted((tmp_path / "labels" / "train").glob("*.txt")):
        boxes = []
        for line in label.read_text().split("\n"):
            if not line:
                continue
            c, cx, cy, w, h = line.split()
            cx, cy, w, h = (float(v) for v in (cx, cy, w, h))
            assert 0 <= int(c) < config["classes"]
            assert config["obj"][0] - 1e-6 <= w <= config["obj"][1] + 1e-6
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        assert 1 <= len(boxes) <= config["max_objects"]
        for i, a in enumerate(boxes):
            assert min(a) >= -1e-6 and max(a) <= 1 + 1e-6
            for b in boxes[:i]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (label.name, a, b)
        count += len(boxes)
    assert count >= 40  # at least one object per image
