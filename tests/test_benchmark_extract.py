"""The extraction benchmark runs (smoke settings) and reports its rates and efficiency."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import extract

pytestmark = pytest.mark.slow


def test_smoke_run_reports_rates_and_efficiency(tmp_path):
    parser = argparse.ArgumentParser()
    extract.add_arguments(parser)
    options = vars(parser.parse_args([]))

    result = extract.run(tmp_path, smoke=True, **options)

    figures = result["figures"]
    for key in ("decode_fps", "encode_fps", "end_to_end_fps", "bound_fps", "efficiency"):
        assert figures[key] > 0, key
    assert figures["bound_fps"] <= min(figures["decode_fps"], figures["encode_fps"])
    assert figures["frames"] > 0 and figures["clips"] == extract.SMOKE_CLIPS
    assert "| end-to-end extraction |" in result["markdown"]
    # The precision the encoder ran in ('auto' resolves it), not an assumed one.
    assert f"random weights, {figures['precision']}," in result["markdown"]
    assert figures["precision"] in ("fp32", "bf16", "int8")
    assert "Efficiency" in result["markdown"]
    assert list(tmp_path.iterdir()) == []
