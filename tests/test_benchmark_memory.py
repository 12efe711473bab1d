"""The memory benchmark: AP per gap bin, and a whole run on tiny settings that resumes."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import memory
from benchmarks.memory import (
    BASELINE,
    GAP_EDGES,
    RESULT_FILE,
    TARGET_SECONDS,
    VARIANTS,
    _worst_cases,
    gap_bin_ap,
    run,
)
from benchmarks.memory_report import PLOT_NAME, bin_labels, default_row
from crt_video.engine.checkpoint import save_checkpoint
from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_json

pytestmark = pytest.mark.slow


def test_a_gap_bin_ranks_its_own_frames_against_every_frame_without_the_class():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    gaps = np.array([15.0, np.nan, 100.0, np.nan, 20.0, np.nan])
    # bin [10, 30): positives at ranks 1 and 4 once the 100 s frame is left out -> (1 + 2/4) / 2
    assert gap_bin_ap(scores, gaps, 10.0, 30.0) == 0.75
    # bin [60, 120): its one frame sits below one negative -> 1/2
    assert gap_bin_ap(scores, gaps, 60.0, 120.0) == 0.5
    assert gap_bin_ap(scores, gaps, 120.0, 180.0) is None
    assert bin_labels([10.0, 30.0, 120.0, float("inf")]) == ["10 s-30 s", "30 s-2 min", "2 min+"]
    assert GAP_EDGES[0] == 10.0 and GAP_EDGES[-1] == float("inf")


def test_smoke_run_reports_every_row_and_resumes_finished_runs(tmp_path):
    result = run(tmp_path, smoke=True)
    table = result["figures"]["results"]["sweep"]
    assert set(table) == {"crt, bias 4, output+hidden", "segment"}
    for row in table.values():
        assert len(row["ap"]) == 1 and len(row["ap"][0]) == len(GAP_EDGES) - 1
        assert any(0.0 <= ap <= 1.0 for ap in row["ap"][0] if not np.isnan(ap))
    assert "(the config's defaults)" in result["markdown"]
    assert "By the worst case over sweep" in result["markdown"]
    assert (tmp_path / PLOT_NAME).stat().st_size > 10_000
    done = sorted((tmp_path / "memory_runs").glob("sweep/*/seed0/gap_result.json"))
    assert len(done) == 2
    stamps = [path.stat().st_mtime_ns for path in done]
    again = run(tmp_path, smoke=True)
    assert [path.stat().st_mtime_ns for path in done] == stamps
    for name, row in again["figures"]["results"]["sweep"].items():
        np.testing.assert_equal(row["ap"], table[name]["ap"])
        assert row["frame_map"] == table[name]["frame_map"]


def test_the_margin_to_segment_compares_the_same_seed_and_skips_seeds_segment_lacks():
    bins = len(GAP_EDGES) - 1
    target = int(np.sum(np.array(GAP_EDGES[:-1]) < TARGET_SECONDS))
    table = {
        BASELINE: {"seeds": [1], "ap": [[0.5] * bins]},
        "crt": {"seeds": [0, 1], "ap": [[0.1] * bins, [0.9] * target + [0.0] * (bins - target)]},
        "gru": {"seeds": [2], "ap": [[0.7] * bins]},
    }
    _worst_cases(table)
    assert table["crt"]["worst"] == pytest.approx(0.1)  # the lowest of any seed in a target bin
    assert table["crt"]["worst_margin"] == pytest.approx(0.4)  # seed 1 only, target bins only
    assert table["gru"]["worst_margin"] is None and table[BASELINE]["worst_margin"] is None


def test_finished_runs_are_reused_from_another_checkout_and_reported_without_training(
    tmp_path, monkeypatch
):
    first = run(tmp_path, smoke=True)
    done = sorted((tmp_path / "memory_runs").glob("sweep/*/seed0/gap_result.json"))
    stamps = [path.stat().st_mtime_ns for path in done]
    shutil.copytree(memory.CONFIGS_DIR, tmp_path / "checkout" / "configs")
    monkeypatch.setattr(memory, "CONFIGS_DIR", tmp_path / "checkout" / "configs")
    rows = ["crt, bias 4, output+hidden", "segment", "xl, u and v per layer"]
    again = run(tmp_path, smoke=True, variants=rows, finished_only=True)
    assert [path.stat().st_mtime_ns for path in done] == stamps
    assert set(again["figures"]["results"]["sweep"]) == set(rows[:2])  # xl never trained
    assert not (tmp_path / "memory_runs" / "sweep" / "xl_u_and_v_per_layer").exists()
    for name, row in again["figures"]["results"]["sweep"].items():
        np.testing.assert_equal(row["ap"], first["figures"]["results"]["sweep"][name]["ap"])
    assert "no training in this call" in again["markdown"]
    with pytest.raises(ConfigError, match="no finished run"):
        run(tmp_path / "elsewhere", smoke=True, finished_only=True)


def test_a_finished_run_is_reused_while_its_checkpoint_trains_what_the_row_asks(tmp_path):
    row = "crt, time scales to 30 min, output+hidden"
    job = memory._job(tmp_path, "heldout", row, 0, smoke=False)
    config = memory._run_config(job).source
    work_dir = Path(job["work_dir"])
    work_dir.mkdir(parents=True)
    atomic_write_json(work_dir / RESULT_FILE, {"job": {}, "result": {"variant": "older name"}})

    def finished(model: dict, version: str) -> dict | None:
        save_checkpoint(
            work_dir / "best.pth",
            config={**config, "model": model},
            class_names=[],
            encoder_identity={},
            feature_dim=1,
            model={},
            crt_video_version=version,
        )
        return memory.finished_result(job)

    # Saved before `head` left the base config and `causal` was named by the row; `shared_biases`
    # is xl's: the model built is the same.
    older = {key: value for key, value in config["model"].items() if key != "causal"}
    assert finished({**older, "head": "memory", "shared_biases": True}, "0.4.0") == {"variant": row}
    assert finished({**config["model"], "frame_read": "output"}, "0.5.0") is None
    # Before 0.4 a config without frame_read trained 'output'.
    without_read = {key: value for key, value in config["model"].items() if key != "frame_read"}
    assert finished(without_read, "0.3.0") is None
    assert finished(without_read, "0.5.0") is not None


def test_a_row_sets_keys_of_other_sections_and_the_config_default_is_the_row_of_its_recipe(
    tmp_path,
):
    longer = memory._job(
        tmp_path, "heldout", "crt, time scales to 30 min, output+hidden, 60 epochs", 0, smoke=False
    )
    run = memory._run_config(longer)
    assert (run.train.epochs, run.train.batch_size, run.model["frame_read"]) == (
        60,
        2,
        "output+hidden",
    )
    defaults = memory._config_keys(longer)  # the family config's own, whatever the row sets
    assert (defaults["train.epochs"], defaults["train.batch_size"]) == (30, 2)
    figures = {"defaults": {"heldout": defaults}, "variants": VARIANTS}
    assert default_row(figures, "heldout") == "crt, bias 4, output+hidden"
