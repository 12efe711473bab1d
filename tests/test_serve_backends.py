"""The engine's model backend on a schedule of three cameras' frames (a reconnection and a long
gap among them), handed to the engine tick by tick: a causal checkpoint's frame steps against its
segment steps."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from test_infer import make_checkpoint
from test_live import CAUSAL_DENSE
from test_serve_api import FP32_ENCODER

from crt_video.engine.checkpoint import open_checkpoint
from crt_video.serve.cameras import CameraFrame
from crt_video.serve.config import ServeConfig
from crt_video.serve.engine import Engine
from crt_video.serve.events import EventBus, EventStore

FRAMES = 40  # per camera: 10 segments of 4 frames at 4 frames/s
RECONNECT, GAP = 18, 22  # camera 1 reconnects before its frame 18; camera 2's 22 comes 10 s late


def make_engine(tmp_path: Path, checkpoint: Path, name: str, **keys) -> Engine:
    """An engine of three cameras that are never started: the test hands it their frames."""
    cfg = ServeConfig.from_dict(
        {
            "checkpoint": str(checkpoint),
            "cameras": [
                {"name": f"cam{i}", "url": str(tmp_path / f"cam{i}.mp4")} for i in range(3)
            ],
            "events_db": str(tmp_path / f"{name}.db"),
            "batch_frames": 64,  # every frame of a tick is encoded: none skipped
            "window_seconds": 2.0,
            "reset_gap_seconds": 5.0,
            **keys,
        }
    )
    store = EventStore(cfg.events_db)
    return Engine(cfg, open_checkpoint(checkpoint), torch.device("cpu"), store, EventBus())


def camera_frames() -> list[list[CameraFrame]]:
    """Three cameras' frames at 4 frames/s: camera 1 reconnects, camera 2 has a long gap."""
    rng = np.random.default_rng(0)
    cameras = []
    for index in range(3):
        frames = []
        for i in range(FRAMES):
            session = 1 + (index == 1 and i >= RECONNECT)
            media = i / 4 + 10.0 * (index == 2 and i >= GAP)
            if index == 1 and i >= RECONNECT:
                media = (i - RECONNECT) / 4
            rgb = torch.from_numpy(rng.integers(0, 256, (32, 32, 3), np.uint8))
            frames.append(CameraFrame(rgb, media, time.perf_counter(), 1000.0 + media, session))
        cameras.append(frames)
    return cameras


def ticks(cameras: list[list[CameraFrame]]) -> list[dict[int, list[CameraFrame]]]:
    """The cameras' frames as ticks take them: 0 to 5 of each camera per tick."""
    rng, taken, result = np.random.default_rng(1), [0, 0, 0], []
    while any(done < FRAMES for done in taken):
        tick = {}
        for index, frames in enumerate(cameras):
            count = int(rng.integers(0, 6))
            if frames[taken[index] : taken[index] + count]:
                tick[index] = frames[taken[index] : taken[index] + count]
            taken[index] += count
        if tick:
            result.append(tick)
    return result


def run(engine: Engine, schedule, by_frame: dict | None = None) -> dict[str, list[np.ndarray]]:
    """Each camera's scores (per segment, or per frame) as the engine labels ``schedule``; also
    into ``by_frame`` by the last frame they label."""
    scores: dict[str, list[np.ndarray]] = {track.camera.name: [] for track in engine.tracks}
    labelled = engine._labelled

    def record(track, row_scores, frames) -> None:
        scores[track.camera.name].append(np.array(row_scores))
        if by_frame is not None:
            by_frame[id(frames[-1])] = np.array(row_scores)
        labelled(track, row_scores, frames)

    engine._labelled = record
    for tick in schedule:
        engine._tick(tick)
    engine.backend.close()
    return scores


def test_local_frame_steps_of_a_causal_checkpoint_give_its_segment_steps_scores(tmp_path):
    """The local backend's two paths on one schedule, resets included: frame by frame (a
    causal per-frame CRT) and, forced, per segment; a causal segment step labels each frame as
    the frame steps do."""
    causal = make_checkpoint(tmp_path / "causal.pth", model=CAUSAL_DENSE, encoder_cfg=FP32_ENCODER)
    schedule = ticks(camera_frames())
    frames, segments = {}, {}
    engine = make_engine(tmp_path, causal, "frames")
    assert engine.backend.frame_steps and engine.encoder_figures()["mode"] == "frame"
    run(engine, schedule, frames)
    engine = make_engine(tmp_path, causal, "segments")
    backend = engine.backend  # as it is for a segment model
    backend.frame_steps, backend.state = False, backend.model.init_state(3)
    run(engine, schedule, segments)
    # frames left over before a reset make no segment: those are labelled frame by frame only
    assert len(frames) > len(segments) >= 3 * 8 * 4
    diff = max(float(np.abs(frames[key] - value).max()) for key, value in segments.items())
    assert diff < 1e-4
