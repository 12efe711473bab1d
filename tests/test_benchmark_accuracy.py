"""The accuracy-vs-cost benchmark and the benchmark command's report, on tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

from crt_video.benchmark.accuracy import PLOT_NAME, run, split_clips

REPO = Path(__file__).resolve().parents[1]


def test_split_is_stratified_and_disjoint():
    videos = [f"{a}_p03_r{i:02d}_v01_c01.mp4" for a in ("Getup", "Sitdown") for i in range(10)]
    splits = split_clips(videos)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert set().union(*(set(t["video"]) for t in splits.values())) == set(videos)
    for table in splits.values():
        assert table["label"].value_counts().nunique() == 1  # both classes equally


def test_smoke_run_trains_real_models_on_real_clips(tmp_path):
    result = run(tmp_path, smoke=True)
    results = result["figures"]["results"]
    assert set(results) == {"crt S=T/4", "meanpool"}
    for figures in results.values():
        assert 0.0 <= figures["mean_class_accuracy"] <= 1.0
        assert figures["gflops_per_clip"] > 0 and figures["train_seconds"] > 0
    assert "| crt S=T/4 |" in result["markdown"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [PLOT_NAME]


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
