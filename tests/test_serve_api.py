"""The home service's HTTP API on a real engine (a file camera replayed at its own pace), and its
labels against tools/infer.py on the same file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from test_infer import CLASSES, CRT, ENCODER

from crt_video.engine.checkpoint import open_checkpoint, save_checkpoint
from crt_video.features.frame_encoder import build_frame_encoder
from crt_video.models import build_model
from crt_video.serve.api import create_app
from crt_video.serve.config import ServeConfig
from crt_video.serve.events import EventStore
from crt_video.serve.service import Service

# fp32: a batch of frames from several cameras gives the same features as one video's batches
FP32_ENCODER = {**ENCODER, "precision": "fp32"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve_ckpt") / "crt.pth"
    encoder = build_frame_encoder(FP32_ENCODER)
    torch.manual_seed(1)
    net = build_model(CRT, encoder.feature_dim, len(CLASSES), frame_rate=4.0)
    save_checkpoint(
        path,
        config={
            "encoder": FP32_ENCODER,
            "model": CRT,
            "sampling": {"fps": 4.0, "max_frames": None},
        },
        class_names=list(CLASSES),
        encoder_identity=encoder.identity,
        feature_dim=encoder.feature_dim,
        model=net.state_dict(),
    )
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, write_test_video) -> Path:
    return write_test_video(tmp_path_factory.mktemp("serve_clip") / "clip.mp4", seconds=8.0)


def start_service(tmp_path: Path, checkpoint: Path, cameras: list[dict], **keys) -> Service:
    cfg = ServeConfig.from_dict(
        {
            "checkpoint": str(checkpoint),
            "cameras": cameras,
            "events_db": str(tmp_path / "events.db"),
            "device": "cpu",
            "backoff_seconds": (0.5, 2.0),
            **keys,
        }
    )
    service = Service(cfg, open_checkpoint(checkpoint), torch.device("cpu"))
    service.start()
    return service


def wait_for(predicate, timeout: float = 60.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def test_the_api_reports_cameras_events_stats_and_metrics(tmp_path, checkpoint, clip):
    cameras = [
        {"name": "kitchen", "url": str(clip)},
        {"name": "hall", "url": str(tmp_path / "missing.mp4")},
    ]
    service = start_service(tmp_path, checkpoint, cameras)
    try:
        client = TestClient(create_app(service))
        assert client.get("/healthz").json() == {"status": "ok"}
        wait_for(lambda: client.get("/readyz").status_code == 200)
        events = wait_for(lambda: client.get("/api/events").json())
        assert {"id", "camera", "label", "start", "end", "score"} <= set(events[0])
        assert events[0]["camera"] == "kitchen" and events[0]["label"] in CLASSES
        assert events[0]["start"].endswith("Z") or "+00:00" in events[0]["start"]
        kitchen, hall = client.get("/api/cameras").json()
        assert kitchen["status"] == "online" and kitchen["activity"]["label"] in CLASSES
        assert kitchen["processed_fps"] > 0 and kitchen["latency"]["p50"] is not None
        assert hall["status"] == "offline" and "missing.mp4" in hall["last_error"]
        stats = client.get("/api/stats").json()
        assert stats["encoder"]["precision"] == "fp32" and stats["encoder"]["cpu"]
        assert sum(stats["encoder"]["batch_sizes"].values()) >= 1
        assert "crt_video_camera_frames_processed_total" in client.get("/metrics").text
        bad = client.get("/api/events", params={"since": "yesterday"})
        assert bad.status_code == 422 and "since" in json.dumps(bad.json())
        assert client.get("/api/events", params={"camera": "hall"}).json() == []
        assert client.post("/api/cameras/attic/enable").status_code == 404
        assert client.post("/api/cameras/kitchen/disable").json()["enabled"] is False
        wait_for(lambda: client.get("/api/cameras").json()[0]["status"] == "disabled")
        assert client.post("/api/cameras/kitchen/enable").json()["enabled"] is True
        schema = client.get("/openapi.json").json()
        assert {"/api/cameras", "/api/events", "/api/events/stream", "/metrics"} <= set(
            schema["paths"]
        )
        assert "Home activities" in client.get("/").text
    finally:
        service.stop()
    # stopping ends the open episodes
    episodes = EventStore(tmp_path / "events.db").query()
    assert episodes and all(episode.end is not None for episode in episodes)
    assert {episode.ended_by for episode in episodes} <= {"activity", "reset", "shutdown"}


def test_the_event_stream_sends_episodes_as_they_happen(tmp_path, checkpoint, clip):
    service = start_service(tmp_path, checkpoint, [{"name": "kitchen", "url": str(clip)}])
    try:
        client = TestClient(create_app(service))
        names = []
        with client.stream("GET", "/api/events/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("event:"):
                    names.append(line.split(":", 1)[1].strip())
                if "episode" in names and "activity" in names:
                    break
        assert names[0] == "hello"
    finally:
        service.stop()


def test_a_camera_replaying_a_file_gets_the_labels_infer_gives_it(
    tmp_path, checkpoint, clip, run_tool
):
    done = run_tool(
        "tools/infer.py", str(clip), "--checkpoint", str(checkpoint),
        "--jsonl", str(tmp_path / "segments.jsonl"), "--device", "cpu",
        threads=None,  # this process's threads: its service's labels are the ones compared
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = [json.loads(line) for line in (tmp_path / "segments.jsonl").read_text().splitlines()]
    # the service labels whole segments; infer also labels the shorter one at the end
    expected = expected[: int(8.0 * 4.0) // CRT["segment_len"]]
    labels: list[str] = []
    service = start_service(
        tmp_path, checkpoint, [{"name": "kitchen", "url": str(clip)}], window_seconds=3600.0
    )

    def collect(change) -> None:
        if change.kind == "activity":
            labels.append(change.activity.label)
        elif change.kind == "updated":
            labels.append(change.episode.label)

    service.bus.listen(collect)
    try:
        wait_for(lambda: len(labels) >= len(expected))
    finally:
        service.stop()
    assert labels[: len(expected)] == [segment["label"] for segment in expected]
