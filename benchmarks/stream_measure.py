"""What each fresh process of the streaming benchmark runs (stream.py starts them): load the
labeler, label a file or standard input once, and report time, memory and, for a file, the
encoder alone at the same settings right after."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from crt_video.decode import iter_frames
from crt_video.engine.checkpoint import open_checkpoint
from crt_video.engine.feature_stream import FeatureStream
from crt_video.engine.inference import FeatureLabeler
from crt_video.engine.labeler import Labeler, checkpoint_labeler

STEP_REPEATS = 50
# Distinct frames the encoder alone cycles through right after each labelling run, as many frames
# as the run labelled, a batch at a time as the stream hands them: the rate that run would have
# reached with decoding and the CRT free, over as long and in the same process.
SUSTAINED_POOL = 240


def _labeler(spec: dict) -> Labeler:
    if spec["runtime"] == "onnx":
        from crt_video.engine.onnx_export import onnx_labeler

        return onnx_labeler(spec["model"], threads=spec["threads"])
    ckpt = open_checkpoint(spec["model"])
    return checkpoint_labeler(ckpt, torch.device("cpu"), spec["precision"])


def _pin(threads: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    torch.set_num_threads(threads)


def measure(spec: dict) -> dict:
    """Runs in its own process: load, label the video once, report time and memory."""
    _pin(spec["threads"])
    labeler = _labeler(spec)
    started = time.perf_counter()
    prediction = labeler.predict(spec["source"])
    result = dict(
        seconds=time.perf_counter() - started,
        duration=prediction.duration,
        frames=prediction.num_frames,
        peak_rss_mib=_peak_rss_mib(),
        segment_len=labeler.runner.segment_len,
        load_average=os.getloadavg()[0],
        precision=getattr(labeler.stream.encoder, "precision", None),
        sustained_frames_per_s=_sustained_rate(labeler.stream, prediction.num_frames),
    )
    if spec["breakdown"]:
        result.update(_breakdown(labeler, Path(spec["source"])))
    return result


@torch.inference_mode()
def _sustained_rate(stream: FeatureStream, num_frames: int) -> float:
    """Frames/s of the stream's encoder alone on ``num_frames`` frames at its input size (cycling
    through about SUSTAINED_POOL random ones), a batch at a time and on torch's threads as the
    stream runs it."""
    encoder = stream.encoder
    batch = encoder.batch_size
    shape = (max(1, SUSTAINED_POOL // batch), batch, *encoder.input_size, 3)
    pool = torch.randint(0, 256, shape, dtype=torch.uint8)
    with stream.torch_threads():
        started = time.perf_counter()
        for index, start in enumerate(range(0, num_frames, batch)):
            encoder.encode(pool[index % len(pool)][: num_frames - start])
        return num_frames / (time.perf_counter() - started)


def measure_stdin(spec: dict) -> dict:
    """Runs in its own process: label standard input live, report the latency of each label
    (per segment, or per frame for a per-frame causal model)."""
    _pin(spec["threads"])
    labeler = _labeler(spec)
    latencies: list[float] = []
    print("ready", flush=True)
    result = labeler.label_live(
        "-", window=0, on_segment=lambda label: latencies.append(label.latency)
    )
    return dict(
        duration=result["duration"],
        labels=len(latencies),
        latency_median_s=statistics.median(latencies),
        latency_p95_s=float(np.percentile(latencies, 95)),
        latency_max_s=max(latencies),
        frames_sampled=result["frames_sampled"],
        frames_dropped=result["frames_dropped"],
        peak_rss_mib=_peak_rss_mib(),
        load_average=os.getloadavg()[0],
    )


@torch.inference_mode()
def _breakdown(labeler: FeatureLabeler, video: Path) -> dict:
    started = time.perf_counter()
    for _ in iter_frames(video, labeler.stream.fps, size=labeler.stream.encoder.input_size):
        pass
    decode_seconds = time.perf_counter() - started

    frames = torch.randint(0, 256, (32, *labeler.stream.encoder.input_size, 3), dtype=torch.uint8)
    labeler.stream.encoder.encode(frames)
    started = time.perf_counter()
    labeler.stream.encoder.encode(frames)
    encode_ms = 1000 * (time.perf_counter() - started) / len(frames)

    model = labeler.runner.model
    segment = torch.randn(1, labeler.runner.segment_len, labeler.stream.encoder.feature_dim)
    state = model.init_state(1)
    times = []
    for _ in range(STEP_REPEATS + 5):
        started = time.perf_counter()
        _, state = model.step(segment, state)
        times.append(time.perf_counter() - started)
    return {
        "decode_seconds": decode_seconds,
        "encode_ms_per_frame": encode_ms,
        "step_ms": 1000 * statistics.median(times[5:]),
    }


def _peak_rss_mib() -> float:
    """This process's resident-memory high-water mark."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")
