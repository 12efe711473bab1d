"""The engine's model backends on one schedule of three cameras' frames (a reconnection and a
long gap among them), handed to the engine tick by tick.

serve.backend='triton': the encoder and step requests go through tritonclient's gRPC client to a
stand-in for the server that runs the exported repository with ONNX Runtime (the encoder as it
is, the step through SequenceReplay); no Triton server is started. Checked: the same per-camera
scores as the local backend, a camera's fresh starts sent as sequence_start, and the one-line
errors at start-up. The local backend: a causal checkpoint's frame steps against its segment
steps."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_infer import CRT, make_checkpoint
from test_live import CAUSAL_DENSE
from test_serve_api import FP32_ENCODER
from test_serve_parts import CONFIGS
from test_triton_export import ReplayClient, export_main

from crt_video.engine.checkpoint import open_checkpoint
from crt_video.engine.triton_replay import read_model_config
from crt_video.errors import CheckpointError, ConfigError, ServerError
from crt_video.serve.cameras import CameraFrame
from crt_video.serve.config import ServeConfig, load_serve_config
from crt_video.serve.engine import Engine
from crt_video.serve.events import EventBus, EventStore

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

VARIANTS = {"clip-mean": {**CRT, "head": "memory+mean"}, "dense": {**CRT, "task": "dense"}}
FRAMES = 40  # per camera: 10 segments of 4 frames at 4 frames/s
RECONNECT, GAP = 18, 22  # camera 1 reconnects before its frame 18; camera 2's 22 comes 10 s late
# Each camera's segments that start its sequence (START): its first, the first after its reset
# and, for a clip checkpoint, the first of every 2 s window (2 segments) since then.
STARTS = {
    "clip-mean": {1: [0, 2, 4, 6, 8], 2: [0, 2, 4, 6, 8], 3: [0, 2, 4, 5, 7]},
    "dense": {1: [0], 2: [0, 4], 3: [0, 5]},
}


class ReplayServer(ReplayClient):
    """ReplayClient answering all the service asks of a server: liveness, its models' configs,
    and requests from several threads (executed one at a time)."""

    def __init__(self, repo: Path) -> None:
        super().__init__(repo)
        self.repo, self.lock = repo, threading.Lock()

    def is_server_live(self, **_) -> bool:
        return True

    def is_model_ready(self, model: str, **_) -> bool:
        return (self.repo / model / "config.pbtxt").is_file()

    def get_model_config(self, model: str, **_):
        config = read_model_config(self.repo / model / "config.pbtxt")
        return service_pb2.ModelConfigResponse(config=config)

    def infer(
        self,
        model,
        inputs,
        outputs=None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        **_,
    ):
        with self.lock:
            try:
                return super().infer(model, inputs, sequence_id, sequence_start, sequence_end)
            except ValueError as err:  # what Triton refuses, it answers with an error
                raise InferenceServerException(str(err)) from None

    def close(self) -> None:
        pass


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    root = tmp_path_factory.mktemp(f"serve_triton_{request.param}")
    checkpoint = make_checkpoint(
        root / "crt.pth", model=VARIANTS[request.param], encoder_cfg=FP32_ENCODER
    )
    export_main(str(checkpoint), "--format", "triton", "--out", str(root / "repo"))
    return request.param, checkpoint, root / "repo"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(
        tmp_path_factory.mktemp("serve_triton") / "crt.pth", encoder_cfg=FP32_ENCODER
    )


@pytest.fixture
def server(exported, monkeypatch) -> ReplayServer:
    """The replay behind tritonclient.grpc.InferenceServerClient, at any URL."""
    replay = ReplayServer(exported[2])
    monkeypatch.setattr(grpcclient, "InferenceServerClient", lambda url, **_: replay)
    return replay


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


def test_triton_backend_gives_the_local_backends_scores(exported, server, tmp_path):
    variant, checkpoint, _ = exported
    schedule = ticks(camera_frames())
    local = run(make_engine(tmp_path, checkpoint, "local"), schedule)
    triton = make_engine(
        tmp_path, checkpoint, "triton", backend="triton", triton_url="localhost:8001"
    )
    figures = triton.encoder_figures()
    assert figures["device"] == "triton localhost:8001" and figures["precision"] == "fp32"
    served = run(triton, schedule)
    diff = 0.0
    for name, expected in local.items():
        assert len(served[name]) == len(expected) > 0, name
        diff = max(diff, float(np.abs(np.stack(served[name]) - np.stack(expected)).max()))
    print(f"{variant}: max abs score difference, Triton replay vs local: {diff:.1e}")
    assert diff < 1e-4
    # the step's requests, each camera's in its order: which carried START
    starts = {}
    for sequence in (1, 2, 3):
        requests = [request for request in server.requests if request.sequence_id == sequence]
        starts[sequence] = [i for i, request in enumerate(requests) if request.start]
    assert starts == STARTS[variant]


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


def test_a_failed_request_stops_the_engine_with_its_error(exported, server, tmp_path):
    engine = make_engine(tmp_path, exported[1], "lost", backend="triton", triton_url="gpu:8001")
    schedule = iter(ticks(camera_frames()))

    def collect():
        if len(server.requests) >= 3:  # the server restarted: its sequences are gone
            server.replay.sequences.clear()
        return next(schedule)

    engine._collect = collect
    engine._loop()  # returns once a request fails
    error = engine.encoder_figures()["error"]
    assert error.startswith("ServerError: Triton at gpu:8001: crt_step (sequence ")
    assert "must start it" in error and "\n" not in error


def test_the_repository_must_be_the_checkpoints(exported, server, tmp_path):
    _, checkpoint, _ = exported
    other = make_checkpoint(
        tmp_path / "other.pth", model={**CRT, "segment_len": 2}, encoder_cfg=FP32_ENCODER
    )
    triton = dict(backend="triton", triton_url="localhost:8001")
    with pytest.raises(CheckpointError, match="crt_step features are .* exported from another"):
        make_engine(tmp_path, other, "other", **triton)
    # a camera may keep its state through a gap of reset_gap_seconds; Triton's idle time is 60 s
    with pytest.raises(CheckpointError, match="drops a camera's state after 60 s") as err:
        make_engine(tmp_path, checkpoint, "gap", reset_gap_seconds=100.0, **triton)
    assert "\n" not in str(err.value)


def test_no_server_at_the_url_is_one_line(checkpoint, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ServerError, match=f"serve.triton_url='{url}': no Triton server") as err:
        make_engine(tmp_path, checkpoint, "down", backend="triton", triton_url=url)
    assert "\n" not in str(err.value)


def test_a_causal_per_frame_checkpoint_is_refused(tmp_path):
    causal = make_checkpoint(tmp_path / "causal.pth", model=CAUSAL_DENSE, encoder_cfg=FP32_ENCODER)
    with pytest.raises(CheckpointError, match="causal per-frame CRT is stepped frame by frame"):
        make_engine(tmp_path, causal, "causal", backend="triton", triton_url="localhost:8001")


def test_without_tritonclient_the_error_names_the_pip_command(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[triton\]"') as err:
        make_engine(tmp_path, checkpoint, "bare", backend="triton", triton_url="localhost:8001")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"backend": "remote"}, "serve.backend='remote' must be one of 'local', 'triton'"),
        ({"backend": "triton"}, "needs serve.triton_url.*e.g. triton_url='localhost:8001'"),
        (
            {"backend": "triton", "triton_url": "http://localhost:8001"},
            "host:port, without a scheme",
        ),
    ],
)
def test_backend_config_errors_are_one_line(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        ServeConfig.from_dict({"checkpoint": "best.pth", **keys})
    assert "\n" not in str(err.value)


def test_the_triton_example_config_is_the_demo_on_triton():
    cfg = load_serve_config(CONFIGS / "serve" / "triton.py")
    demo = load_serve_config(CONFIGS / "serve" / "demo.py")
    assert (cfg.backend, cfg.triton_url, cfg.train_config) == ("triton", "localhost:8001", None)
    assert cfg.cameras == demo.cameras and demo.backend == "local"
