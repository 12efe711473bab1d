"""The memory benchmark: AP per gap bin, and a whole run on tiny settings that resumes."""

import numpy as np
import pytest

from crt_video.benchmark.memory import GAP_EDGES, gap_bin_ap, run
from crt_video.benchmark.memory_report import PLOT_NAME, bin_labels

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
    assert set(table) == {"crt, time scales to 30 min, output+hidden", "segment"}
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
