"""The CR-ViT benchmark's smoke run: the demo rows, the cost rows and the FLOPs per clip."""

from __future__ import annotations

import pytest

from benchmarks.crvit import run

pytestmark = pytest.mark.slow


def test_smoke_run_reports_demo_rows_costs_and_flops(tmp_path):
    result = run(tmp_path, smoke=True)
    figures = result["figures"]
    assert set(figures["demo"]) == {
        "crvit, key/value slot",
        "crvit, key/value slot, memory zeroed",
        "crvit, key/value slot, memory the only path",
        "crvit, key/value slot, memory the only path, memory zeroed",
        "crvit, token slot",
        "crvit, token slot, memory zeroed",
        "crvit, token slot, memory the only path",
        "crvit, token slot, memory the only path, memory zeroed",
        "timesformer",
    }
    for row in figures["demo"].values():
        assert 0.0 <= row["mean_class_accuracy"] <= 1.0 and row["num_clips"] > 0
    demo = figures["costs"]["demo"]
    assert demo["train"]["clips_per_second"] > 0 and demo["test"]["clips_per_second"] > 0
    # ViT-B/16 at 16 x 224 x 224: TimeSformer's published ~0.59 TFLOPs per 8-frame view doubles;
    # CR-ViT's memory token adds one query per spatial position to every time attention
    flops = figures["gflops_per_clip"]
    assert 700 < flops["timesformer"] < 850
    assert 0 < flops["crvit"] - flops["timesformer"] < 0.05 * flops["timesformer"]
    assert "| crvit, token slot, memory zeroed |" in result["markdown"]
