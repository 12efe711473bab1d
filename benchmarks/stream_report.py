"""The streaming benchmark's figures and its report section, from the measurements of stream.py."""

from __future__ import annotations

from crt_video.features.frame_encoder import FrameEncoderConfig
from crt_video.features.precision import native_bf16
from crt_video.utils.cpu import cpu_flags, cpu_name


def stream_figures(
    rows: dict,
    long: dict,
    live: dict,
    live_per_frame: dict,
    encoder_alone: dict,
    *,
    encoder_cfg: FrameEncoderConfig,
    clip: dict,
    fps: float,
    threads: int,
    default_runtime: str,
    step_repeats: int,
    encoder_batch: int,
    encoder_repeats: int,
    pipeline_repeats: int,
    sweep_repeats: int,
) -> dict:
    """The figures of one run: each runtime's clip, the long clip, the live pipe (labels per
    segment, and per frame from a causal per-frame model), and the encoder
    alone per precision with the real-time bound it sets and each row's share of it."""
    default = rows[default_runtime]
    alone = {p: {**m, "bound": m["frames_per_s"] / fps} for p, m in encoder_alone.items()}
    return {
        "encoder": ", ".join(
            [encoder_cfg.name, *(f"{k}={v}" for k, v in encoder_cfg.kwargs.items())]
        ),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "native_bf16": native_bf16("cpu"),
        "auto_precision": default["precision"],
        "sampling_fps": fps,
        "threads": threads,
        "clip": f"{clip['width']}x{clip['height']} {clip['video_fps']} fps",
        "default_runtime": default_runtime,
        "step_repeats": step_repeats,
        "encoder_batch": encoder_batch,
        "encoder_repeats": encoder_repeats,
        "pipeline_repeats": pipeline_repeats,
        "sweep_repeats": sweep_repeats,
        "fastest_precision": max(alone, key=lambda p: alone[p]["frames_per_s"]),
        "step_latency_ms": default["step_ms"],
        "segment_len": default["segment_len"],
        "segment_seconds": default["segment_len"] / fps,
        "encode_ms_per_frame": default["encode_ms_per_frame"],
        "decode_seconds": default["decode_seconds"],
        "encoder_alone": alone,
        "runtimes": {name: _video_figures(result, alone) for name, result in rows.items()},
        "short": _video_figures(default, alone),
        "long": _video_figures(long, alone),
        "live": live,
        "live_per_frame": live_per_frame,
        "peak_rss_growth_mib": long["peak_rss_mib"] - default["peak_rss_mib"],
    }


def _encoder_alone_markdown(figures: dict) -> str:
    """The encoder-alone tables: frames/s, cosine and bound per precision, and the batch sweep."""
    fps = figures["sampling_fps"]
    encoder_rows = "\n".join(
        f"| {p} | {m['frames_per_s']:.1f} | {1000 / m['frames_per_s']:.1f} | "
        f"{m['cosine']:.5f} | {m['bound']:.1f}x |"
        for p, m in figures["encoder_alone"].items()
    )
    sweep = sorted({b for m in figures["encoder_alone"].values() for b in m["frames_per_s_at"]})
    sweep_rows = "\n".join(
        f"| {p} | " + " | ".join(f"{m['frames_per_s_at'][b]:.1f}" for b in sweep) + " |"
        for p, m in figures["encoder_alone"].items()
    )
    int8_runtimes = figures["encoder_alone"].get("int8", {}).get("runtimes", {})
    runtime_rows = "\n".join(
        f"| {runtime} | {m['frames_per_s']:.1f} | {m['cosine']:.5f} |"
        for runtime, m in int8_runtimes.items()
    )
    runtime_table = f"""
int8 is one quantised graph; each runtime installed ran it at the same batch (the encoder uses the
first):

| runtime | frames/s | cosine to fp32 |
|---|---:|---:|
{runtime_rows}
"""
    return f"""The encoder alone ({figures["encoder_batch"]} frames a batch, best of {figures["encoder_repeats"]}; cosine: the lowest
per-frame cosine of its features to fp32's). The bound is its frames/s over {fps:g}: no pipeline
built on it runs faster than that many times real time.

| precision | frames/s | ms / frame | cosine to fp32 | real-time bound |
|---|---:|---:|---:|---:|
{encoder_rows}

The same, frames/s at other batch sizes (best of {figures["sweep_repeats"]}):

| precision | {" | ".join(f"{b} a batch" for b in sweep)} |
|---|{"---:|" * len(sweep)}
{sweep_rows}
{runtime_table if int8_runtimes else ""}"""


def stream_markdown(figures: dict) -> str:
    fps = figures["sampling_fps"]
    rows = "\n".join(
        f"| {name}{_resolved(name, v)} | {v['duration']:.0f} s | {v['frames']} | "
        f"{v['seconds']:.1f} | {v['real_time_factor']:.1f}x | {_of_bound(v)} | "
        f"{v['sustained_frames_per_s']:.1f} | {v['of_sustained']:.2f} | "
        f"{v['peak_rss_mib']:.0f} | {v['load_average']:.1f} |"
        for name, v in [
            *figures["runtimes"].items(),
            (f"{figures['default_runtime']}, long clip", figures["long"]),
        ]
    )
    live, per_frame, cold = figures["live"], figures["live_per_frame"], figures["cold_start"]
    return f"""## Streaming inference (stream)

This CPU: {figures["cpu"]}; flags {", ".join(figures["cpu_flags"]) or "none of AMX, AVX512-BF16, VNNI, NEON"}
({"native" if figures["native_bf16"] else "no native"} bf16). {figures["threads"]} cores, encoder
`{figures["encoder"]}` (random weights, same compute as pretrained) at {fps:g} sampled frames/s.

{_encoder_alone_markdown(figures)}
What tools/infer.py runs (decode + encode + CRT, default timeline) on a synthetic
{figures["clip"]} clip, segments of {figures["segment_len"]} frames
({figures["segment_seconds"]:g} s); `auto` chose {figures["auto_precision"]}, the encoder alone
was fastest in {figures["fastest_precision"]}. Each row is the fastest of {figures["pipeline_repeats"]} runs, each in a
fresh process (wall: labelling only, after loading); peak RSS is its high-water mark (VmHWM);
"of bound" is its real-time factor over its precision's bound (ONNX Runtime's against fp32's).
"sustained": frames/s of the same encoder alone on as many frames as the row, a batch at a time,
in each run's process right after its labelling (the median of the runs), so that a neighbour
slowing the machine slows both; "of sustained": each run's frames/s over its own sustained rate,
the median of the runs (all of them: the JSON's all_of_sustained).
"load avg" is the machine's 1-minute load average when the row finished: above {figures["threads"]},
other processes shared the cores and the times are slower than this machine can do.

| runtime | length | frames sampled | wall (s) | real-time factor | of bound | sustained (frames/s) | of sustained | peak RSS (MiB) | load avg |
|---|---|---|---|---|---|---|---|---|---|
{rows}

Live pipe (`{figures["default_runtime"]}`, {live["duration"]:.0f} s of MPEG-TS written into
`tools/infer.py -` at the clip's pace): arrival-to-label latency per segment median
{live["latency_median_s"]:.2f} s, p95 {live["latency_p95_s"]:.2f} s, max
{live["latency_max_s"]:.2f} s over {live["labels"]} segments (target: within the segment's
{figures["segment_seconds"]:g} s + 1 s); {live["frames_dropped"]} of {live["frames_sampled"]}
frames dropped; peak RSS {live["peak_rss_mib"]:.0f} MiB; load avg {live["load_average"]:.1f}.
The same pipe into a causal per-frame CRT (`model.task='dense'`, `model.causal=True`), one label
per frame as it is encoded: latency median {per_frame["latency_median_s"]:.2f} s, p95
{per_frame["latency_p95_s"]:.2f} s, max {per_frame["latency_max_s"]:.2f} s over
{per_frame["labels"]} frames; {per_frame["frames_dropped"]} of {per_frame["frames_sampled"]}
frames dropped.

One streaming step ({figures["segment_len"]}-frame segment through the CRT, median of
{figures["step_repeats"]}): {figures["step_latency_ms"]:.2f} ms. Encoder ({figures["default_runtime"]}):
{figures["encode_ms_per_frame"]:.1f} ms per frame; decoding the short clip alone:
{figures["decode_seconds"]:.1f} s. Peak memory of the long clip minus the short one:
{figures["peak_rss_growth_mib"]:+.0f} MiB.

Cold start: `tools/infer.py` on a 1 s clip as a whole process, start to exit, median of
{len(cold["all_wall_s"])} runs after the first: {cold["wall_s"]:.2f} s
({cold["wall_s"] / cold["target_s"]:.2f} of the {cold["target_s"]:g} s target), of which imports
{cold["imports_s"]:.2f} s; the first run for the checkpoint, which builds the encoder and fills the
cache: {cold["first_run_s"]:.2f} s.
"""


def _resolved(name: str, figure: dict) -> str:
    return f" ({figure['precision']})" if name.startswith("auto") and figure["precision"] else ""


def _of_bound(figure: dict) -> str:
    return "-" if figure["of_bound"] is None else f"{figure['of_bound']:.2f}"


def _video_figures(result: dict, alone: dict) -> dict:
    """One clip's figures; "of_bound": its real-time factor over its precision's bound (ONNX
    Runtime's, which has none, over fp32's)."""
    real_time_factor = result["duration"] / result["seconds"]
    bound = alone.get(result.get("precision") or "fp32", {}).get("bound")
    return {
        "duration": result["duration"],
        "frames": result["frames"],
        "seconds": result["seconds"],
        "all_seconds": result.get("all_seconds", [result["seconds"]]),
        "real_time_factor": real_time_factor,
        "peak_rss_mib": result["peak_rss_mib"],
        "load_average": result["load_average"],
        "precision": result.get("precision"),
        "of_bound": real_time_factor / bound if bound else None,
        "sustained_frames_per_s": result["sustained_frames_per_s"],
        "of_sustained": result["of_sustained"],
        "all_of_sustained": result["all_of_sustained"],
    }
