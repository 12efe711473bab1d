"""The decoding benchmark runs (smoke settings): rates, and the backends agree on its frames."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import decode

pytestmark = pytest.mark.slow


def test_smoke_run_reports_rates_and_backend_agreement(tmp_path):
    parser = argparse.ArgumentParser()
    decode.add_arguments(parser)
    result = decode.run(tmp_path, smoke=True, **vars(parser.parse_args(["--repeats", "1"])))
    figures = result["figures"]
    for method in ("native + resize_frames", "decoder's own scaler"):
        assert figures[method]["decord_fps"] > 0 and figures[method]["pyav_fps"] > 0
    assert figures["native + resize_frames"]["max_difference"] <= 1
    assert "| native + resize_frames |" in result["markdown"]
    assert list(tmp_path.iterdir()) == []
