"""The accuracy-vs-cost benchmark and the benchmark command's report, on tiny settings."""

import argparse
import json

import pytest

from benchmarks import accuracy
from benchmarks.accuracy import (
    add_arguments,
    bootstrap_interval,
    choose_variants,
    resumable_scratch,
    run,
    run_one,
)
from benchmarks.accuracy_clips import fold_splits, fold_table
from benchmarks.accuracy_report import (
    ABLATION_GAP_PLOT_NAME,
    ABLATION_PLOT_NAME,
    GAP_PLOT_NAME,
    PLOT_NAME,
    ablation_verdict,
    xl_verdict,
)
from benchmarks.accuracy_variants import (
    ABLATION_REFERENCE,
    FULL_RECIPE,
    TRANSFORMER,
    ablation_variants,
    model_variants,
)
from crt_video.errors import ConfigError
from crt_video.models import build_model

pytestmark = pytest.mark.slow


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
    assert set(results) == {"crt gru S=T/4", "xl S=T/4", "gru", full, "meanpool"}
    assert results["xl S=T/4"]["model"]["segment_len"] == 32 // 4  # smoke clips: 32 frames
    for figures in results.values():
        assert 0.0 <= figures["mean_class_accuracy"] <= 1.0
        low, high = figures["interval"]
        assert low <= figures["mean_class_accuracy"] <= high
        assert figures["test_clips"] == 24  # every clip tested once
        assert 0.0 <= figures["train_top1"] <= 1.0 and figures["train_seconds"] > 0
        assert set(figures["by_gap"]) == {"0.5", "2"}
    assert results[full]["gflops_per_clip"] > 0 and results[full]["flops_vs_full"] == 1.0
    report = result["markdown"]
    assert report.startswith("## Accuracy vs cost (`accuracy`)")
    for name in ("crt gru S=T/4", "xl S=T/4", "gru"):
        assert f"| {name}" in report
    assert "gap 0.5" in report and "Transformer-XL at the same segment lengths" in report
    assert "Against Transformer-XL at the same segment length:\n- crt gru S=T/4: " in report
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([PLOT_NAME, GAP_PLOT_NAME])


def test_ablation_smoke_run_reports_its_own_section_and_plots(tmp_path):
    result = run(tmp_path, smoke=True, ablations=True)
    results = result["figures"]["results"]
    ablation = "crt gru S=T/4, neither (earlier variant)"
    assert set(results) == {ABLATION_REFERENCE, ablation}
    assert results[ABLATION_REFERENCE]["flops_vs_reference"] == 1.0
    assert all(figures["test_clips"] == 24 for figures in results.values())
    report = result["markdown"]
    assert report.startswith("## Ablations of CRT (`accuracy --ablations`)")
    assert f"Against the paper's `{ABLATION_REFERENCE}`" in report
    assert f"\n- {ablation}: " in report and " at gap 0.5 (" in report
    assert "Against `full" not in report and "Transformer-XL" not in report
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ABLATION_PLOT_NAME, ABLATION_GAP_PLOT_NAME]
    )


def test_recipe_search_scores_validation_clips_only(tmp_path):
    result = run(tmp_path, smoke=True, select_full=True)
    results = result["figures"]["results"]
    assert len(results) == 2
    for figures in results.values():
        assert 0.0 <= figures["val_mean_class_accuracy"] <= 1.0
        assert "predictions" not in figures and "videos" not in figures  # no test clip scored
    assert "Best on validation:" in result["markdown"]
    assert not list(tmp_path.iterdir())


def test_a_restarted_benchmark_skips_the_runs_that_finished(tmp_path, monkeypatch):
    trained = []

    def train_and_score(job):
        trained.append(job["name"])
        return {"name": job["name"], "predictions": [1, 0]}

    monkeypatch.setattr(accuracy, "_train_and_score", train_and_score)
    job = {"name": "crt", "fold": 0, "work_dir": str(tmp_path / "0-0"), "cfg": {"lr": 1e-3}}
    first = run_one(job)
    assert run_one(job) == first and trained == ["crt"]
    run_one({**job, "cfg": {"lr": 1e-4}})  # another recipe in the same folder trains again
    assert trained == ["crt", "crt"]


def test_scratch_of_other_settings_is_started_afresh(tmp_path):
    folder = resumable_scratch(tmp_path / "work", {"clips": 24})
    (folder / "clip.mp4").write_bytes(b"kept")
    assert (resumable_scratch(tmp_path / "work", {"clips": 24}) / "clip.mp4").exists()
    assert not (resumable_scratch(tmp_path / "work", {"clips": 48}) / "clip.mp4").exists()


def test_benchmark_command_writes_report_json_and_plots_only(tmp_path, run_tool):
    out = tmp_path / "report"
    run_tool("tools/benchmark.py", "model", "--smoke", "--out", str(out), check=True)
    assert sorted(p.name for p in out.iterdir()) == ["model_cost.png", "report.md", "results.json"]
    figures = json.loads((out / "results.json").read_text())
    assert figures["smoke"] is True and "model" in figures
    assert "`python tools/benchmark.py model`" in (out / "report.md").read_text()


def test_rows_of_the_comparison_and_of_the_ablations():
    main = model_variants(1024, smoke=False)
    assert list(main) == [
        *(f"crt {cell} S=T/{k}" for cell in ("gru", "ncgru") for k in (4, 8, 16)),
        *(f"xl S=T/{k}" for k in (4, 8, 16)),
        "gru",
        "segment S=T/8",
        "segment S=T/4, recurrent positions",
        "crt gru S=T/4, mean head (as xl)",
        f"full ({FULL_RECIPE})",
        "meanpool",
    ]
    # one factor from "crt gru S=T/4" each: the memory, or the clip's read
    reference = main["crt gru S=T/4"]["model"]
    no_memory = main["segment S=T/4, recurrent positions"]["model"]
    assert (no_memory["segment_len"], no_memory["positions"]) == (
        reference["segment_len"],
        "recurrent",
    )
    assert main["crt gru S=T/4, mean head (as xl)"]["model"] == {**reference, "head": "mean"}
    assert not any(variant.get("ablation") for variant in main.values())
    for name, variant in main.items():  # one width and depth, the model defaults otherwise
        model = variant["model"]
        if model["type"] != "meanpool":
            assert (model["d_model"], model["depth"]) == (TRANSFORMER["d_model"], 1), name
        if model["type"] == "crt":
            assert not {"memory_read", "positions", "position_dim", "memory_gate_bias"} & set(
                model
            ), name
    assert main["xl S=T/8"]["model"]["segment_len"] == 128
    ablations = ablation_variants(1024, smoke=False)
    expected = {
        ABLATION_REFERENCE: (256, {}),
        "crt gru S=T/4, memory RNN only": (
            256,
            {"memory_read": "sequence", "positions": "learned"},
        ),
        "crt gru S=T/4, position RNN only": (
            256,
            {"memory_read": "token", "positions": "recurrent"},
        ),
        "crt gru S=T/4, neither (earlier variant)": (
            256,
            {"memory_read": "token", "positions": "learned"},
        ),
        "crt gru S=T/4, 32-number position RNN": (256, {"position_dim": 32}),
        "crt gru S=T/4, time scales to 30 min": (
            256,
            {"memory_horizon": 1800.0, "memory_gate_bias": None},
        ),
    }
    assert list(ablations) == list(expected)
    for name, (segment_len, keys) in expected.items():
        model = ablations[name]["model"]
        assert model["type"] == "crt" and model["memory_cell"] == "gru", name
        assert model["segment_len"] == segment_len and keys.items() <= model.items(), name
        assert ablations[name]["ablation"] == (name != ABLATION_REFERENCE)
        build_model(model, 16, 2, frame_rate=4.0)  # every row is a valid config
    assert len(ablation_variants(1024, smoke=True)) == 2


def test_rows_pick_part_of_a_table_and_ablations_keep_their_reference():
    rows = choose_variants(1024, False, False, True, ["crt gru S=T/4, time scales to 30 min"])
    assert list(rows) == [ABLATION_REFERENCE, "crt gru S=T/4, time scales to 30 min"]
    assert list(choose_variants(1024, False, False, False, ["segment S=T/8"])) == ["segment S=T/8"]
    with pytest.raises(ValueError, match="no row 'crt S=T/4' in this table"):
        choose_variants(1024, False, False, False, ["crt S=T/4"])


def test_ablations_and_recipe_search_are_separate_runs(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--ablations"]).ablations
    with pytest.raises(SystemExit):
        parser.parse_args(["--ablations", "--select-full"])
    with pytest.raises(ConfigError, match="--folds 2: each run needs a test fold"):
        run(tmp_path, folds=2)
    with pytest.raises(ValueError, match="separate runs"):
        run(tmp_path, smoke=True, ablations=True, select_full=True)


def _row(kind: str, segment_len: int | None, mca: float, gflops: float, **extra) -> dict:
    """A hand-made result: interval mca +- 0.04, the same figures at every gap."""
    figures = {"mean_class_accuracy": mca, "interval": (mca - 0.04, mca + 0.04)}
    return {
        "model": {"type": kind, "segment_len": segment_len},
        "ablation": False,
        "learned": True,
        "gflops_per_clip": gflops,
        "by_gap": {"0.5": dict(figures), "8": dict(figures)},
        **figures,
        **extra,
    }


def test_xl_verdict_compares_crt_with_xl_of_the_same_segment_length():
    results = {
        "crt gru S=T/4": _row("crt", 256, 0.90, 0.2),
        "crt gru S=T/8": _row("crt", 128, 0.95, 0.16),
        "crt gru S=T/16": _row("crt", 64, 0.97, 0.15),
        "crt gru S=T/4, ablated": _row("crt", 256, 0.5, 0.2, ablation=True),
        "xl S=T/4": _row("xl", 256, 0.80, 0.4),
        "xl S=T/8": _row("xl", 128, 0.94, 0.32),
        "gru": _row("gru", None, 0.6, 0.01),
    }
    lines = xl_verdict(results)
    assert lines == [
        "Against Transformer-XL at the same segment length:",
        "- crt gru S=T/4: +10.0 points vs xl S=T/4 (80.0 [76.0, 84.0]) at 0.50x its FLOPs; "
        "the intervals do not overlap.",
        "- crt gru S=T/8: +1.0 points vs xl S=T/8 (94.0 [90.0, 98.0]) at 0.50x its FLOPs; "
        "the intervals overlap.",
    ]  # no xl at S=T/16, and ablation rows are not compared
    results["xl S=T/8"]["learned"] = False
    assert xl_verdict(results)[2] == "- crt gru S=T/8: xl S=T/8 did not learn: no comparison."
    assert xl_verdict({"crt gru S=T/4": results["crt gru S=T/4"]}) == []


def test_ablation_verdict_gives_each_row_against_the_papers_crt():
    results = {
        ABLATION_REFERENCE: _row("crt", 256, 0.90, 0.2),
        "crt gru S=T/4, neither (earlier variant)": _row("crt", 256, 0.85, 0.19, ablation=True),
        "crt gru S=T/16, other S": _row("crt", 64, 0.99, 0.15, ablation=True),
    }
    results["crt gru S=T/16, other S"]["by_gap"]["0.5"]["mean_class_accuracy"] = 0.7
    lines = ablation_verdict(results)
    assert lines[0].startswith(f"Against the paper's `{ABLATION_REFERENCE}` (90.0 [86.0, 94.0]")
    assert lines[1:] == [
        "- crt gru S=T/4, neither (earlier variant): -5.0 points overall, -5.0 at gap 0.5 "
        "(the intervals overlap).",
        "- crt gru S=T/16, other S: +9.0 points overall, -20.0 at gap 0.5 "
        "(the intervals do not overlap; a different segment length too).",
    ]
    results[ABLATION_REFERENCE]["learned"] = False
    assert ablation_verdict(results)[0].endswith("; it did not learn):")
