"""The serve benchmark runs (smoke settings) over RTSP cameras and reports every check."""

from __future__ import annotations

import argparse

import pytest
from test_serve_live import lacking

from benchmarks import serve
from benchmarks.rtsp_cameras import missing_packages
from crt_video.utils.cpu import cpu_name

pytestmark = pytest.mark.slow

CHECKS = {
    "capacity over bound",
    "service over peer cameras",
    "overload p95 latency (s)",
    "overload memory growth (MiB)",
    "overload skipped frames, most / fewest camera",
    "reconnection: back online after (s)",
    "reconnection: others' frames/s change",
    "soak memory growth (MiB)",
    "soak: closed episodes lost on restart",
}


def test_smoke_run_reports_capacity_overload_reconnection_and_soak(tmp_path):
    reason = missing_packages()
    if reason:
        lacking(reason)
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)

    result = serve.run(tmp_path, smoke=True, **vars(parser.parse_args([])))

    figures = result["figures"]
    assert figures["encoder"] == "vit_tiny_patch16_224" and figures["sampling_fps"] == 4.0
    assert figures["cpu"] == cpu_name() and figures["cores"] == 2
    bound = figures["bound"]
    assert bound["frames_per_s"] > 0 and bound["cameras"] == bound["frames_per_s"] / 4.0
    assert bound["frames_per_s_one_at_a_time"] > 0
    assert bound["rss_mib_after_warm_up"] >= bound["rss_mib_before_warm_up"] > 100
    for search in (figures["capacity"], figures["peer"]):
        assert 0 <= search["cameras"] <= 2 and search["trials"]
        for count, trial in search["trials"].items():
            assert trial["cameras"] == count and trial["skipped_fraction"] >= 0
            assert trial["pace_min"] > 0 and trial["latency_p95_s"] >= trial["latency_p50_s"] >= 0
            assert trial["rss_mib"] > 100  # a process with torch, per process that ran
    assert figures["capacity"]["trials"][2]["precision"] == bound["precision"]
    overload = figures["overload"]
    assert overload["cameras"] == 3 and overload["seconds"] >= 4.0
    assert all(rss > 0 for rss in overload["rss_mib"]) and len(overload["rss_mib"]) > 2
    back = figures["reconnection"]
    assert back["cameras"] == 2 and back["online_after_s"] > 0 and back["outage_seconds"] >= 2.0
    assert back["backoff_s"] in (0.5, 1.0)  # the smoke service's backoff_seconds=(0.5, 1.0)
    assert list(back["others_rate_ratio"]) == ["camera0"]
    assert back["others_rate_ratio"]["camera0"] > 0
    soak = figures["soak"]
    assert soak["cameras"] == 2 and soak["exit_code"] == 0 and soak["rss_mib"][0] > 0
    assert soak["closed_episodes"] >= 2  # at least each camera's, closed at shutdown
    assert soak["closed_episodes_lost"] == 0
    assert set(figures["checks"]) == CHECKS
    assert all(isinstance(check["passed"], bool) for check in figures["checks"].values())
    markdown = result["markdown"]
    assert "| check | figure | target | passed |" in markdown
    assert all(f"| {name} |" in markdown for name in CHECKS)
    assert cpu_name() in markdown and "Peer (tools/infer.py per camera) trials" in markdown
    assert list(tmp_path.iterdir()) == []
