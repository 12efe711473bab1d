"""The accuracy-vs-cost benchmark and the benchmark command's report, on tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

from crt_video.benchmark.accuracy import (
    FULL_RECIPE,
    GAP_PLOT_NAME,
    PLOT_NAME,
    bootstrap_interval,
    fold_splits,
    fold_table,
    run,
)

REPO = Path(__file__).resolve().parents[1]


def test_folds_test_every_clip_once_and_keep_splits_disjoint():
    videos = [
        f"gap{gap}/{a}_p03_r{i:02d}_v01_c01.mp4"
        for gap in (0.5, 8)
        for a in ("Getup", "Sitdown")
        for i in range(8)
    ]
    table = fold_table(videos, folds=4)
    tested = []
    for fold in range(4):
        splits = fold_splits(table, fold, 4)
        sets = [set(splits[name]["video"]) for name in ("train", "val", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert set().union(*sets) == set(videos)
        test = table.set_index("video").loc[splits["test"]["video"]]
        # stratified: both classes and both gaps equally in every test fold
        assert test.groupby(["label", "gap"]).size().nunique() == 1
        tested += splits["test"]["video"].tolist()
    assert sorted(tested) == sorted(videos)


def test_bootstrap_interval_brackets_the_score_and_narrows_with_more_clips():
    import numpy as np

    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400):
        labels = rng.integers(0, 2, n)
        preds = np.where(rng.random(n) < 0.8, labels, 1 - labels)
        low, high = bootstrap_interval(labels, preds)
        assert low < (preds == labels).mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_smoke_run_trains_real_models_on_real_clips(tmp_path):
    result = run(tmp_path, smoke=True)
    results = result["figures"]["results"]
    full = f"full ({FULL_RECIPE})"
    assert set(results) == {"crt gru S=T/4", full, "meanpool"}
    for figures in results.values():
        assert 0.0 <= figures["mean_class_accuracy"] <= 1.0
        low, high = figures["interval"]
        assert low <= figures["mean_class_accuracy"] <= high
        assert figures["test_clips"] == 24  # every clip tested once
        assert 0.0 <= figures["train_top1"] <= 1.0 and figures["train_seconds"] > 0
        assert set(figures["by_gap"]) == {"0.5", "2"}
    assert results[full]["gflops_per_clip"] > 0 and results[full]["flops_vs_full"] == 1.0
    assert "| crt gru S=T/4" in result["markdown"] and "gap 0.5" in result["markdown"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([PLOT_NAME, GAP_PLOT_NAME])


def test_recipe_search_scores_validation_clips_only(tmp_path):
    result = run(tmp_path, smoke=True, select_full=True)
    results = result["figures"]["results"]
    assert len(results) == 2
    for figures in results.values():
        assert 0.0 <= figures["val_mean_class_accuracy"] <= 1.0
        assert "predictions" not in figures and "videos" not in figures  # no test clip scored
    assert "Best on validation:" in result["markdown"]
    assert not list(tmp_path.iterdir())


def test_benchmark_command_writes_report_json_and_plots_only(tmp_path):
    out = tmp_path / "report"
    subprocess.run(
        [sys.executable, "tools/benchmark.py", "model", "--smoke", "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=300,
        capture_output=True,
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["model_cost.png", "report.md", "results.json"]
    figures = json.loads((out / "results.json").read_text())
    assert figures["smoke"] is True and "model" in figures
    assert "`python tools/benchmark.py model`" in (out / "report.md").read_text()
