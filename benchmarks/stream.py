"""Streaming inference on this machine's CPU: every encoder precision and ONNX Runtime side by side.

First the encoder alone, in each precision this CPU offers (``cpu_precisions``): frames/s and
cosine to fp32, the bound each puts on real time. Then a synthetic 640x480 20 fps clip goes
through what tools/infer.py runs (decode + encode + CRT, default timeline) with a randomly
initialised encoder (the same compute as pretrained weights, which cannot be downloaded
offline), once per runtime: PyTorch with 'auto' (the precision measured fastest, as users get
it), fp32, bf16 autocast and int8, and ONNX Runtime (fp32 graphs from tools/export.py). Every measurement runs in a fresh process pinned
to ``threads`` cores, so its peak resident memory (VmHWM) is its own: a long clip with the same
peak as the short one shows constant memory. The live row feeds the clip as MPEG-TS through the
process's standard input at the clip's own pace (``tools/infer.py -``) and records, per segment,
the time from the arrival of its last frame to its label.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.checkout import checkout_env
from benchmarks.cold_start import CLIP_SECONDS, measure_cold_start
from benchmarks.stream_measure import STEP_REPEATS
from benchmarks.stream_report import stream_figures, stream_markdown
from crt_video.config import load_config
from crt_video.data.smarthome import CLASSES_31
from crt_video.engine.checkpoint import save_checkpoint
from crt_video.features.frame_encoder import (
    FrameEncoder,
    FrameEncoderConfig,
    build_frame_encoder,
    resolve_batch_size,
)
from crt_video.features.int8 import Int8Runner, installed_int8_runtimes
from crt_video.features.precision import (
    cpu_precisions,
    measure_precisions,
    probe_frames,
)
from crt_video.models import build_model
from crt_video.run_config import CONFIGS_DIR, parse_run_config
from crt_video.utils.threads import cpu_threads

CONFIG = CONFIGS_DIR / "smarthome_cs.py"
FULL = dict(seconds=60.0, live_seconds=30.0, width=640, height=480, video_fps=20)
SMOKE = dict(seconds=4.0, live_seconds=3.0, width=160, height=120, video_fps=10)
# Smoke settings only check that the benchmark runs: a tiny encoder and CRT.
SMOKE_ENCODER = FrameEncoderConfig("vit_tiny_patch16_224", kwargs={"img_size": 32})
SMOKE_MODEL = dict(d_model=64, depth=1, segment_len=4)
# The live row again with a model that labels every frame as it is encoded: a causal per-frame CRT.
PER_FRAME_MODEL = dict(task="dense", causal=True)
# Fresh processes per pipeline row, the fastest kept: the encoder-alone bound is a best-of too,
# and on a shared machine one run can lose a third of its speed to a neighbour.
PIPELINE_REPEATS = 3
# name -> (runtime, encoder precision); 'auto' first, so later rows find its choice cached
RUNTIMES = {
    "auto": ("torch", "auto"),
    "fp32": ("torch", "fp32"),
    "bf16": ("torch", "bf16"),
    "int8": ("torch", "int8"),
    "onnx": ("onnx", None),
}
DEFAULT_RUNTIME = "auto"  # what tools/infer.py users get with --precision auto
ENCODER_REPEATS = 5
# Frames a batch at which the encoder alone is also timed: why batch_size='auto' is 8 on a CPU.
SWEEP_BATCHES = (1, 8, 64)
SWEEP_REPEATS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="vit_small_patch16_224", help="timm encoder name")
    parser.add_argument("--fps", type=float, default=4.0, help="sampled frames per second")
    parser.add_argument("--threads", type=int, default=2, help="CPU cores to run on")
    parser.add_argument(
        "--long-minutes", type=float, default=10.0, help="length of the memory-comparison clip"
    )


def run(
    out_dir: Path,
    smoke: bool = False,
    encoder: str = "vit_small_patch16_224",
    fps: float = 4.0,
    threads: int = 2,
    long_minutes: float = 10.0,
) -> dict:
    clip = SMOKE if smoke else FULL
    encoder_cfg = SMOKE_ENCODER if smoke else FrameEncoderConfig(encoder)
    long_seconds = 2 * clip["seconds"] if smoke else 60.0 * long_minutes
    geometry = (clip["width"], clip["height"], clip["video_fps"])
    with tempfile.TemporaryDirectory(prefix="crt_stream_") as tmp:
        tmp = Path(tmp)
        model_keys = SMOKE_MODEL if smoke else {}
        checkpoint = write_checkpoint(tmp / "stream.pth", encoder_cfg, fps, model_keys)
        export_dir = _export(checkpoint, tmp / "onnx")
        short_video = write_clip(tmp / "short.mp4", clip["seconds"], *geometry)
        long_video = write_clip(tmp / "long.mp4", long_seconds, *geometry)
        live_video = write_clip(tmp / "live.ts", clip["live_seconds"], *geometry)
        encoder_alone = measure_encoder_alone(
            encoder_cfg, threads, sweep=(1, 4) if smoke else SWEEP_BATCHES
        )
        repeats = 1 if smoke else PIPELINE_REPEATS
        rows = {}
        for name in runtimes():
            model = export_dir if name == "onnx" else checkpoint
            spec = _spec(name, model, short_video, threads, breakdown=name == DEFAULT_RUNTIME)
            rows[name] = fastest_of(spec, repeats)
        long = fastest_of(_spec(DEFAULT_RUNTIME, checkpoint, long_video, threads), repeats)
        live = measure_live(_spec(DEFAULT_RUNTIME, checkpoint, "-", threads), live_video)
        per_frame = write_checkpoint(
            tmp / "per_frame.pth", encoder_cfg, fps, {**model_keys, **PER_FRAME_MODEL}
        )
        live_per_frame = measure_live(_spec(DEFAULT_RUNTIME, per_frame, "-", threads), live_video)
        one_second = write_clip(tmp / "one_second.mp4", CLIP_SECONDS, *geometry)
        cold_start = measure_cold_start(checkpoint, one_second, tmp / "home", threads, repeats)
    setup = dict(
        encoder_cfg=encoder_cfg,
        clip=clip,
        fps=fps,
        threads=threads,
        default_runtime=DEFAULT_RUNTIME,
        step_repeats=STEP_REPEATS,
        encoder_batch=resolve_batch_size(encoder_cfg.batch_size, "cpu"),
        encoder_repeats=ENCODER_REPEATS,
        pipeline_repeats=repeats,
        sweep_repeats=SWEEP_REPEATS,
    )
    figures = stream_figures(rows, long, live, live_per_frame, encoder_alone, **setup)
    figures["cold_start"] = cold_start
    return {"markdown": stream_markdown(figures), "figures": figures}


def runtimes() -> list[str]:
    """The runtimes worth timing on this CPU: emulated bf16 is left out, being slower than fp32."""
    offered = cpu_precisions()
    return [name for name, (_, p) in RUNTIMES.items() if p in (None, "auto", *offered)]


def measure_encoder_alone(
    encoder_cfg: FrameEncoderConfig, threads: int, sweep: tuple[int, ...] = SWEEP_BATCHES
) -> dict:
    """precision -> {'frames_per_s', 'cosine', 'frames_per_s_at': {batch: frames/s}} of the
    encoder alone on ``threads`` cores, at its own batch and at each batch of ``sweep``."""
    with cpu_threads(torch.device("cpu"), threads):
        encoder = build_frame_encoder(
            replace(encoder_cfg, pretrained=False, precision="fp32"), "cpu"
        )
        frames = probe_frames(max(encoder.batch_size, *sweep), encoder.input_size)
        x = encoder.preprocess(frames)
        alone = measure_precisions(
            encoder.runner_for, x[: encoder.batch_size], cpu_precisions(), ENCODER_REPEATS
        )
        if "int8" in alone:
            alone["int8"]["runtimes"] = _int8_by_runtime(encoder, x[: encoder.batch_size])
        for batch in sweep:
            at_batch = measure_precisions(encoder.runner_for, x[:batch], list(alone), SWEEP_REPEATS)
            for precision, measured in at_batch.items():
                alone[precision].setdefault("frames_per_s_at", {})[batch] = measured["frames_per_s"]
        return alone


def _int8_by_runtime(encoder: FrameEncoder, x: torch.Tensor) -> dict:
    """runtime -> {'frames_per_s', 'cosine'} of the encoder's int8 graph run by each installed
    runtime (the encoder uses the first: ``int8_runtime``)."""
    used = encoder.runner_for("int8")
    runners = {"fp32": encoder.model}
    for runtime in installed_int8_runtimes():
        same = runtime == used.runtime
        runners[runtime] = (
            used if same else Int8Runner(used.path, torch.get_num_threads(), runtime, len(x))
        )
    measured = measure_precisions(runners.__getitem__, x, list(runners), ENCODER_REPEATS)
    return {runtime: measured[runtime] for runtime in runners if runtime != "fp32"}


def _spec(name: str, model: Path, source: Path | str, threads: int, breakdown: bool = False):
    runtime, precision = RUNTIMES[name]
    return dict(
        model=str(model),
        source=str(source),
        threads=threads,
        runtime=runtime,
        precision=precision,
        breakdown=breakdown,
    )


def _export(checkpoint: Path, out_dir: Path) -> Path:
    from crt_video.engine.onnx_export import export_onnx

    return export_onnx(checkpoint, out_dir)


def write_checkpoint(path: Path, encoder: FrameEncoderConfig, fps: float, model: dict) -> Path:
    """A checkpoint of the default Smarthome config with this encoder (random weights), sampling
    rate and model overrides."""
    cfg = load_config(CONFIG)
    encoder = replace(encoder, pretrained=False)
    cfg["encoder"] = asdict(encoder)
    cfg["sampling"].update(fps=fps)
    cfg["model"].update(model)
    run = parse_run_config(cfg)
    frozen = build_frame_encoder(encoder)
    torch.manual_seed(run.runtime.seed)
    head = build_model(run.model, frozen.feature_dim, len(CLASSES_31), run.sampling.fps)
    save_checkpoint(
        path,
        config=run.source,
        class_names=list(CLASSES_31),
        encoder_identity=frozen.identity,
        feature_dim=frozen.feature_dim,
        model=head.state_dict(),
    )
    return path


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> Path:
    """A moving bright square on a dark gradient: cheap to encode, so 10 minutes take seconds."""
    background = np.zeros((height, width, 3), np.uint8)
    background[..., 2] = np.linspace(30, 90, width, dtype=np.uint8)
    side = height // 4
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for index in range(round(seconds * fps)):
            frame = background.copy()
            x = int((width - side) * (0.5 + 0.5 * np.sin(index / fps)))
            y = int((height - side) * (0.5 + 0.5 * np.cos(index / (2 * fps))))
            frame[y : y + side, x : x + side] = 230
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _child(function: str, spec: dict, **popen) -> subprocess.Popen:
    """``function(spec)`` of stream_measure in a new interpreter, printing its result as JSON."""
    code = (
        f"import json, sys; from benchmarks.stream_measure import {function}; "
        f"print(json.dumps({function}(json.loads(sys.argv[1]))))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)],
        env=checkout_env(),
        stdout=subprocess.PIPE,
        **popen,
    )


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"benchmark process failed with exit code {process.returncode}")
    return json.loads(out.decode().splitlines()[-1])


def measure_in_fresh_process(spec: dict) -> dict:
    """``measure`` in a new interpreter, so its peak memory belongs to this video alone."""
    return _result(_child("measure", spec))


def fastest_of(spec: dict, repeats: int) -> dict:
    """The fastest of ``repeats`` fresh-process measurements, with every run's wall time, and the
    median over the runs of each one's frames/s over its own sustained encoder-alone rate."""
    runs = [measure_in_fresh_process(spec) for _ in range(repeats)]
    of_sustained = [r["frames"] / r["seconds"] / r["sustained_frames_per_s"] for r in runs]
    return {
        **min(runs, key=lambda run: run["seconds"]),
        "all_seconds": [r["seconds"] for r in runs],
        "sustained_frames_per_s": statistics.median(r["sustained_frames_per_s"] for r in runs),
        "of_sustained": statistics.median(of_sustained),
        "all_of_sustained": of_sustained,
    }


def measure_live(spec: dict, clip: Path) -> dict:
    """``measure_stdin`` in a new interpreter, fed ``clip`` (MPEG-TS) at its own pace."""
    process = _child("measure_stdin", spec, stdin=subprocess.PIPE)
    ready = process.stdout.readline()  # the labeler is loaded: the stream starts now
    if ready.strip() != b"ready":
        raise RuntimeError(f"live benchmark process did not start: {ready!r}")
    _feed_at_pace(clip, process.stdin)
    return _result(process)  # closes the pipe: the stream ends


def _feed_at_pace(clip: Path, out) -> None:
    """Copy the packets of ``clip`` into ``out`` as MPEG-TS, each at its presentation time."""
    started = time.perf_counter()
    with av.open(str(clip)) as source, av.open(_Writer(out), "w", format="mpegts") as sink:
        stream = source.streams.video[0]
        copy = sink.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            delay = started + float(packet.pts * stream.time_base) - time.perf_counter()
            time.sleep(max(0.0, delay))
            packet.stream = copy
            sink.mux(packet)
            out.flush()


class _Writer:
    """Writes through to a pipe that PyAV must not close."""

    def __init__(self, out) -> None:
        self.write, self.flush = out.write, out.flush
