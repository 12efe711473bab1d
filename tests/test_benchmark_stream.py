"""The streaming benchmark runs (smoke settings) and reports speed, latency and memory per runtime."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import stream
from crt_video.decode import probe_video
from crt_video.features.int8 import installed_int8_runtimes
from crt_video.features.precision import cpu_precisions
from crt_video.utils.cpu import cpu_flags

pytestmark = pytest.mark.slow


def test_smoke_run_reports_runtimes_latency_and_memory(tmp_path):
    parser = argparse.ArgumentParser()
    stream.add_arguments(parser)
    options = vars(parser.parse_args([]))

    result = stream.run(tmp_path, smoke=True, **options)

    figures = result["figures"]
    assert figures["step_latency_ms"] > 0 and figures["encode_ms_per_frame"] > 0
    assert figures["encoder"].startswith("vit_tiny_patch16_224")
    assert figures["sampling_fps"] == 4.0
    offered = cpu_precisions()
    assert list(figures["runtimes"]) == ["auto", *offered, "onnx"]
    assert list(figures["encoder_alone"]) == offered
    assert figures["auto_precision"] in offered
    for precision, alone in figures["encoder_alone"].items():
        assert alone["bound"] == alone["frames_per_s"] / 4.0 and alone["cosine"] > 0.99
        assert set(alone["frames_per_s_at"]) == {1, 4}
        row = figures["runtimes"][precision]
        assert row["precision"] == precision
        assert row["of_bound"] == row["real_time_factor"] / alone["bound"]
    for clip in [*figures["runtimes"].values(), figures["long"]]:
        assert clip["real_time_factor"] > 0 and clip["peak_rss_mib"] > 0
        assert clip["frames"] == round(clip["duration"] * 4)
        assert clip["all_seconds"] == [clip["seconds"]]  # smoke: one run per row
        rate = clip["frames"] / clip["seconds"]
        assert clip["of_sustained"] == rate / clip["sustained_frames_per_s"] > 0
        assert clip["all_of_sustained"] == [clip["of_sustained"]]
    assert figures["long"]["duration"] == 2 * figures["short"]["duration"]
    live, per_frame = figures["live"], figures["live_per_frame"]
    for row in (live, per_frame):
        assert 0 < row["latency_median_s"] <= row["latency_p95_s"] <= row["latency_max_s"]
        assert row["frames_sampled"] == round(row["duration"] * 4)
    assert live["labels"] >= 2  # one a segment of 4 frames
    assert per_frame["labels"] == per_frame["frames_sampled"]  # one a frame
    assert "per frame as it is encoded" in result["markdown"]
    markdown = result["markdown"]
    assert "| onnx |" in markdown and "real-time factor" in markdown and "latency" in markdown
    assert f"| auto ({figures['auto_precision']}) |" in markdown and "real-time bound" in markdown
    assert "| precision | 1 a batch | 4 a batch |" in markdown and "| of sustained |" in markdown
    assert figures["fastest_precision"] in offered
    if "int8" in offered:  # the int8 graph, run by each runtime installed
        by_runtime = figures["encoder_alone"]["int8"]["runtimes"]
        assert list(by_runtime) == installed_int8_runtimes()
        assert all(m["frames_per_s"] > 0 and m["cosine"] > 0.99 for m in by_runtime.values())
        assert all(f"| {runtime} |" in markdown for runtime in by_runtime)
    assert figures["cpu_flags"] == cpu_flags()
    cold = figures["cold_start"]
    assert len(cold["all_wall_s"]) == 1 and cold["wall_s"] > cold["imports_s"] > 0
    assert cold["first_run_s"] > 0 and "Cold start: `tools/infer.py` on a 1 s clip" in markdown
    assert list(tmp_path.iterdir()) == []


def test_generated_clip_has_the_requested_geometry(tmp_path):
    info = probe_video(stream.write_clip(tmp_path / "clip.mp4", 3.0, 64, 48, 20))
    assert (info.width, info.height, info.num_frames) == (64, 48, 60)
    assert info.duration == 3.0
