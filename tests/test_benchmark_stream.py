"""The streaming benchmark runs (smoke settings) and reports latency, speed and memory."""

from __future__ import annotations

import argparse

from crt_video.benchmark import stream
from crt_video.data.video import probe_video


def test_smoke_run_reports_latency_speed_and_memory(tmp_path):
    parser = argparse.ArgumentParser()
    stream.add_arguments(parser)
    options = vars(parser.parse_args([]))

    result = stream.run(tmp_path, smoke=True, **options)

    figures = result["figures"]
    assert figures["step_latency_ms"] > 0 and figures["encode_ms_per_frame"] > 0
    assert figures["encoder"].startswith("vit_tiny_patch16_224")
    assert figures["sampling_fps"] == 4.0
    for name in ("short", "long"):
        clip = figures[name]
        assert clip["real_time_factor"] > 0
        assert clip["peak_rss_mib"] >= clip["loaded_rss_mib"] > 0
        assert clip["frames"] == round(clip["duration"] * 4)
    assert figures["long"]["duration"] == 2 * figures["short"]["duration"]
    assert "| long |" in result["markdown"] and "real-time factor" in result["markdown"]
    assert list(tmp_path.iterdir()) == []


def test_generated_clip_has_the_requested_geometry(tmp_path):
    info = probe_video(stream.write_clip(tmp_path / "clip.mp4", 3.0, 64, 48, 20))
    assert (info.width, info.height, info.num_frames) == (64, 48, 60)
    assert info.duration == 3.0
