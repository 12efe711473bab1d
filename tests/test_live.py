"""Live sources in tools/infer.py: a pipe, a local HTTP server, stalls, signals, dropped frames."""

from __future__ import annotations

import functools
import http.server
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import pytest
import torch
from test_infer import CLASSES, CRT, infer_main, make_checkpoint

from crt_video.decode import Feed, SampledFrame, is_live_source
from crt_video.engine.checkpoint import load_checkpoint, open_checkpoint
from crt_video.engine.dense_inference import ActivityDetector
from crt_video.engine.inference import FeatureLabeler
from crt_video.errors import VideoDecodeError

FPS = 10
# The test checkpoint samples 4 frames/s in segments of 4 frames: one label per second.
SEGMENT_SECONDS = 1.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("live") / "crt.pth")


class KeepOpen:
    """Writes through to a file that PyAV must not close when its container closes."""

    def __init__(self, out: BinaryIO) -> None:
        self.write, self.flush = out.write, out.flush


def write_mpegts(out: BinaryIO, seconds: float | None, realtime: bool = False) -> None:
    """MPEG-TS H.264 at FPS into ``out``, flushed per frame; ``seconds=None`` runs until the
    reader goes away. ``realtime`` paces the frames at the clock."""
    started = time.perf_counter()
    try:
        with av.open(KeepOpen(out), "w", format="mpegts") as container:
            stream = container.add_stream(
                "libx264", rate=FPS, options={"preset": "ultrafast", "tune": "zerolatency"}
            )
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            index = 0
            while seconds is None or index < seconds * FPS:
                frame = np.full((48, 64, 3), (index * 7) % 200 + 20, dtype=np.uint8)
                frame[:16, (index * 3) % 48 : (index * 3) % 48 + 16] = (250, 30, 30)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                out.flush()
                index += 1
                if realtime:
                    time.sleep(max(0.0, started + index / FPS - time.perf_counter()))
            container.mux(stream.encode())
    except (av.FFmpegError, ValueError, OSError):
        pass  # the reader stopped


@pytest.fixture
def start_infer(start_tool) -> Callable[..., subprocess.Popen]:
    """``start_infer(*args)``: ``tools/infer.py ARGS`` started, stdin, stdout and stderr piped."""
    pipe = subprocess.PIPE
    return functools.partial(start_tool, "tools/infer.py", stdin=pipe, stdout=pipe, stderr=pipe)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_segment_lines(lines: list[dict], stopped: bool = False) -> None:
    """Whole segments, each ending one segment later; a stopped stream's last one may be partial."""
    times = [line["time"] for line in lines]
    if stopped:
        assert SEGMENT_SECONDS * (len(times) - 1) < times.pop() <= SEGMENT_SECONDS * len(lines)
    assert times == pytest.approx([SEGMENT_SECONDS * (n + 1) for n in range(len(times))])
    for line in lines:
        assert set(line) == {"time", "label", "score", "top_k"}
        assert line["label"] in CLASSES and line["top_k"][0]["label"] == line["label"]


def test_live_sources_are_told_from_files():
    for source in ("-", "rtsp://cam/1", "http://h/a.ts", "udp://0.0.0.0:5000", "/dev/video0"):
        assert is_live_source(source)
    for source in ("clip.mp4", "data/http.mp4", "/data/videos/a.mp4"):
        assert not is_live_source(source)


def test_pipe_mpegts_gets_one_line_per_segment_and_a_summary(checkpoint, tmp_path, start_infer):
    lines, summary = tmp_path / "segments.jsonl", tmp_path / "summary.json"
    process = start_infer(
        "-", "--checkpoint", str(checkpoint), "--jsonl", str(lines), "--json", str(summary),
        "--window", "2", "--top-k", "2",
    )  # fmt: skip
    write_mpegts(process.stdin, seconds=6.0)
    _, err = process.communicate(timeout=120)  # closes the pipe: the stream ends
    assert process.returncode == 0, err.decode()
    check_segment_lines(read_jsonl(lines))
    assert len(read_jsonl(lines)) == 6
    result = json.loads(summary.read_text())
    assert result["source"] == "-" and result["end"] == "ended" and result["error"] is None
    assert result["frames_sampled"] == 24 and 0 <= result["frames_dropped"] < 24
    assert [(w["start"], w["end"]) for w in result["timeline"]] == [(0, 2), (2, 4), (4, 6)]
    assert "standard input" not in err.decode() and "stream ended after 6.0 s" in err.decode()


def test_http_stream_from_a_local_server(checkpoint, tmp_path, start_infer):
    with open(tmp_path / "clip.ts", "wb") as clip:
        write_mpegts(clip, seconds=4.0)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.ts"
        lines = tmp_path / "segments.jsonl"
        process = start_infer(url, "--checkpoint", str(checkpoint), "--jsonl", str(lines))
        out, err = process.communicate(timeout=120)
        server.shutdown()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[0] == url
    check_segment_lines(read_jsonl(lines))
    assert len(read_jsonl(lines)) == 4


def test_sigterm_ends_a_live_stream_with_its_summary_and_exit_0(checkpoint, tmp_path, start_infer):
    lines, summary = tmp_path / "segments.jsonl", tmp_path / "summary.json"
    process = start_infer(
        "-", "--checkpoint", str(checkpoint), "--jsonl", str(lines), "--json", str(summary)
    )
    writer = threading.Thread(target=write_mpegts, args=(process.stdin, None, True), daemon=True)
    writer.start()
    deadline = time.monotonic() + 90
    while len(read_jsonl(lines)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    result = json.loads(summary.read_text())
    assert result["end"] == "stopped" and result["frames_sampled"] >= 8
    assert result["top_k"][0]["label"] in CLASSES
    assert "frames sampled" in out.decode()
    check_segment_lines(read_jsonl(lines), stopped=True)


def test_stalled_pipe_is_one_error_line_after_the_summary(checkpoint, tmp_path, start_infer):
    summary = tmp_path / "summary.json"
    process = start_infer(
        "-", "--checkpoint", str(checkpoint), "--timeout", "1", "--json", str(summary)
    )
    write_mpegts(process.stdin, seconds=3.0)  # the trailer is written, the pipe stays open
    assert process.wait(timeout=120) == 2
    err = process.stderr.read()
    process.stdin.close()
    errors = [line for line in err.decode().splitlines() if line.startswith("error: ")]
    assert errors == ["error: standard input: no data for 1 s; the stream stalled"]
    result = json.loads(summary.read_text())
    assert result["end"] == "error" and result["frames_sampled"] >= 4


@pytest.mark.parametrize("source", ["tcp://127.0.0.1:{port}", "/dev/video97"])
def test_source_that_cannot_be_opened_is_named(checkpoint, source):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        source = source.format(port=probe.getsockname()[1])
    with pytest.raises(VideoDecodeError, match=f"{source}: cannot open the stream"):
        infer_main(source, "--checkpoint", str(checkpoint), "--timeout", "2")


@torch.inference_mode()
def test_backlog_is_thinned_evenly_and_dropped_frames_reuse_features(checkpoint):
    labeler = FeatureLabeler.from_checkpoint(load_checkpoint(checkpoint))
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (10, *labeler.stream.encoder.input_size, 3), generator=generator)
    frames = [SampledFrame(i, image.to(torch.uint8).numpy(), 0.0) for i, image in enumerate(rgb)]

    class Backlog:  # ten frames waiting at once: more than one segment (4)
        def take(self, stop=None):
            batch, frames[:] = list(frames), []
            return batch

    counts = {"frames_sampled": 0, "frames_dropped": 0}
    chunks = list(labeler.stream.live_chunks(Backlog(), 4, None, counts, []))
    assert counts == {"frames_sampled": 10, "frames_dropped": 6}
    features = torch.cat([chunk.features for chunk in chunks])
    kept = labeler.stream.encoder.encode(rgb[[0, 3, 6, 9]].to(torch.uint8)).half().float()
    expected = kept[[0, 0, 0, 1, 1, 1, 2, 2, 2, 3]]  # each frame: the last kept one before it
    torch.testing.assert_close(features, expected)


def test_feed_hands_over_every_item_then_the_end_or_the_error():
    bounded = Feed(iter(range(7)), maxsize=2)  # more items than room: the producer waits
    taken = []
    while batch := bounded.take(limit=1):
        taken += batch
        time.sleep(0.3)  # a slow consumer: the queue is full when the end comes
    assert taken == list(range(7)) and bounded.finished

    def broken():
        yield from range(3)
        raise VideoDecodeError("clip.mp4: broke off")

    feed = Feed(broken(), maxsize=1)
    taken = []
    with pytest.raises(VideoDecodeError, match="broke off"):
        while batch := feed.take():
            taken += batch
    assert taken == [0, 1, 2]


CAUSAL_DENSE = {**CRT, "task": "dense", "causal": True}


@pytest.fixture(scope="module")
def causal_dense(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("causal") / "dense.pth", model=CAUSAL_DENSE)


def check_frame_lines(lines: list[dict], num_frames: int) -> None:
    """One line per sampled frame (4 frames/s), each at its frame's end, top activities first."""
    assert [line["time"] for line in lines] == pytest.approx(
        [(n + 1) / 4 for n in range(num_frames)]
    )
    for line in lines:
        assert set(line) == {"time", "label", "score", "top_k"}
        assert line["label"] in CLASSES and line["top_k"][0]["label"] == line["label"]
        scores = [item["score"] for item in line["top_k"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_a_causal_per_frame_checkpoint_writes_a_line_per_frame_from_a_pipe(
    causal_dense, tmp_path, start_infer
):
    lines, summary = tmp_path / "frames.jsonl", tmp_path / "summary.json"
    process = start_infer(
        "-", "--checkpoint", str(causal_dense), "--jsonl", str(lines), "--json", str(summary),
        "--top-k", "3",
    )  # fmt: skip
    write_mpegts(process.stdin, seconds=6.0)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    check_frame_lines(read_jsonl(lines), 24)
    assert all(len(line["top_k"]) == 3 for line in read_jsonl(lines))
    result = json.loads(summary.read_text())
    assert result["source"] == "-" and result["end"] == "ended" and result["duration"] == 6.0
    for item in result["intervals"]:
        assert item["label"] in CLASSES and 0 <= item["start"] < item["end"] <= 6.0


def test_per_frame_lines_of_a_file_are_those_of_its_whole_forward(
    causal_dense, write_test_video, tmp_path
):
    """Frame by frame through the causal stepper, a file gets the scores the model gives all of
    its frames at once, and as many lines."""
    video = write_test_video(tmp_path / "three_seconds.mp4", seconds=3.0, fps=10)
    lines = tmp_path / "frames.jsonl"
    assert infer_main(str(video), "--checkpoint", str(causal_dense), "--jsonl", str(lines)) == 0
    written = read_jsonl(lines)
    check_frame_lines(written, 12)

    labeler = ActivityDetector.from_checkpoint(open_checkpoint(causal_dense), torch.device("cpu"))
    chunks = labeler.stream.file_chunks(labeler.stream.sample(video))
    features = torch.cat([chunk.features for chunk in chunks])
    with torch.inference_mode():
        whole = labeler.runner.model(features[None], torch.tensor([len(features)]))[0].sigmoid()
    best = [line["score"] for line in written]
    assert best == pytest.approx(whole.max(-1).values.tolist(), abs=1e-4)
