"""The service's HTTP API (FastAPI: typed routes, OpenAPI at /docs) and its live page.

Every route but ``/healthz`` needs the token when ``serve.token`` is set: ``Authorization:
Bearer <token>``, or ``?token=<token>`` (which the page and EventSource use). Times are ISO 8601.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from crt_video.serve.activity import Change, Episode
from crt_video.serve.service import Service

STREAM_QUEUE = 1000  # events kept for a slow page; beyond it the oldest are dropped


class LabelScore(BaseModel):
    label: str
    score: float


class ActivityOut(BaseModel):
    label: str
    score: float
    since: datetime


class LatencyOut(BaseModel):
    """Seconds from a frame's capture to its label over the last minute; None without labels."""

    p50: float | None
    p95: float | None


class CameraOut(BaseModel):
    name: str
    status: str
    enabled: bool
    activity: ActivityOut | None
    top_k: list[LabelScore]
    camera_fps: float
    processed_fps: float
    skipped_fps: float
    skipped_frames: int
    reconnects: int
    last_error: str | None
    since_reset: float
    latency: LatencyOut


class EpisodeOut(BaseModel):
    id: int | None
    camera: str
    label: str
    start: datetime
    end: datetime | None
    score: float
    ended_by: str | None


class EncoderOut(BaseModel):
    frames_per_second: float
    batch_sizes: dict[int, int]
    batch_frames: int
    precision: str | None
    encoder: str | None
    cpu: str
    device: str
    latency: LatencyOut
    mode: str
    uptime: float
    error: str | None


class StatsOut(BaseModel):
    cameras: list[CameraOut]
    encoder: EncoderOut


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="crt_video home service",
        summary="Activities of daily living from several cameras, by one CRT",
        version=service.version,
    )
    app.state.service = service
    app.include_router(health)
    app.include_router(guarded, dependencies=[Depends(_token_check)])
    return app


def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]
health = APIRouter(tags=["health"])
# Every route but /healthz: the token check is added where create_app includes it.
guarded = APIRouter()


@health.get("/healthz")
def healthz() -> dict:
    """The process is alive (no token needed)."""
    return {"status": "ok"}


@guarded.get("/readyz", tags=["health"])
def readyz(service: ServiceDep) -> JSONResponse:
    """The model is loaded and at least one camera is online."""
    ready = service.engine.ready and service.engine.error is None
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@guarded.get("/api/cameras", tags=["cameras"])
def cameras(service: ServiceDep) -> list[CameraOut]:
    return [_camera(service, track) for track in service.engine.tracks]


@guarded.post("/api/cameras/{name}/enable", tags=["cameras"])
def enable(name: str, service: ServiceDep) -> CameraOut:
    track = _track(service, name)
    track.camera.enable()
    return _camera(service, track)


@guarded.post("/api/cameras/{name}/disable", tags=["cameras"])
def disable(name: str, service: ServiceDep) -> CameraOut:
    track = _track(service, name)
    track.camera.disable()
    return _camera(service, track)


@guarded.get("/api/events", tags=["events"])
def events(
    service: ServiceDep,
    camera: str | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 500,
) -> list[EpisodeOut]:
    """Episodes that overlap [since, until], newest first."""
    found = service.store.query(camera, label, _seconds(since), _seconds(until), limit)
    return [_episode(episode) for episode in found]


@guarded.get("/api/events/stream", tags=["events"], response_class=EventSourceResponse)
async def stream(service: ServiceDep) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``episode`` (opened, updated or closed) and ``activity`` (a camera's
    activity changed)."""
    queue: asyncio.Queue[Change] = asyncio.Queue(STREAM_QUEUE)
    loop = asyncio.get_running_loop()

    def hand_over(change: Change) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(change)

    remove = service.bus.listen(lambda change: loop.call_soon_threadsafe(hand_over, change))
    try:
        yield ServerSentEvent(event="hello", data={"cameras": len(service.engine.tracks)})
        while True:
            yield _sse(await queue.get())
    finally:
        remove()


@guarded.get("/api/stats", tags=["stats"])
def stats(service: ServiceDep) -> StatsOut:
    return StatsOut(
        cameras=[_camera(service, track) for track in service.engine.tracks],
        encoder=EncoderOut(**service.engine.encoder_figures()),
    )


@guarded.get("/metrics", tags=["stats"])
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics."""
    for track in service.engine.tracks:
        service.engine.camera_figures(track)  # brings the camera gauges up to date
    body = generate_latest(service.engine.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@guarded.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return resources.files("crt_video.serve").joinpath("page.html").read_text()


def _token_check(
    service: ServiceDep,
    authorization: Annotated[str | None, Header()] = None,
    token_query: Annotated[str | None, Query(alias="token")] = None,
) -> None:
    token = service.cfg.token
    if token is None:
        return
    given = token_query
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if given is None or not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid token is needed", headers={"WWW-Authenticate": "Bearer"})


def _track(service: Service, name: str):
    track = service.engine.camera(name)
    if track is None:
        raise HTTPException(404, f"no camera named {name!r}")
    return track


def _camera(service: Service, track) -> CameraOut:
    figures = service.engine.camera_figures(track)
    activity = figures["activity"]
    if activity is not None:
        activity = ActivityOut(**{**activity, "since": _time(activity["since"])})
    top = [LabelScore(label=label, score=score) for label, score in figures["top_k"]]
    return CameraOut(
        **{**figures, "activity": activity, "top_k": top}, enabled=track.camera.enabled
    )


def _episode(episode: Episode) -> EpisodeOut:
    return EpisodeOut(
        id=episode.id,
        camera=episode.camera,
        label=episode.label,
        start=_time(episode.start),
        end=None if episode.end is None else _time(episode.end),
        score=round(episode.score, 4),
        ended_by=episode.ended_by,
    )


def _sse(change: Change) -> ServerSentEvent:
    if change.kind == "activity":
        activity = change.activity
        data = {
            "camera": activity.camera,
            "label": activity.label,
            "score": round(activity.score, 4),
            "since": _time(activity.since).isoformat(),
        }
        return ServerSentEvent(event="activity", data=data)
    episode = _episode(change.episode).model_dump(mode="json")
    return ServerSentEvent(event="episode", data={"action": change.kind, "episode": episode})


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _seconds(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
