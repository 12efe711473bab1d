"""The serve benchmark's measurements, each on a freshly started service (or peers) that has
warmed up: whether a number of cameras keeps up, the largest that does, overload, reconnection
and soak. ``bench`` is serve.py's :class:`Bench`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import numpy as np

from benchmarks.rtsp_cameras import RtspCameras
from benchmarks.serve_procs import (
    START_TIMEOUT,
    PeerProcess,
    ServiceProcess,
    rss_mib,
    wait_for,
)
from crt_video.serve.config import ServeConfig
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)

MAX_SKIPPED = 0.01  # of the frames sampled
LATENCY_SLACK = 1.0  # p95 latency at most a segment's duration plus this
MIN_PACE = 0.95  # of the sampling rate: a decoder that falls behind loses frames uncounted
RSS_SAMPLES = 60  # resident memory readings over a run
RECONNECT_SLACK = 2.0  # back online within the backoff in progress plus this


def keeps_up(figures: dict, segment_seconds: float) -> bool:
    """Under 1% of frames skipped, p95 latency within a segment + 1 s, every camera sampled at
    95% of its rate or more (and online)."""
    p95 = figures["latency_p95_s"]
    return (
        figures["skipped_fraction"] < MAX_SKIPPED
        and p95 is not None
        and p95 <= segment_seconds + LATENCY_SLACK
        and figures["pace_min"] >= MIN_PACE
    )


def observe(service: ServiceProcess, bench, seconds: float) -> dict:
    """The service over the next ``seconds``: frames sampled and skipped per camera (counters'
    differences), latency percentiles at the end, resident memory every ``seconds / 60``."""
    first = service.snapshot()
    rss = [service.rss_mib()]
    step = max(0.5, seconds / RSS_SAMPLES)
    while time.monotonic() - first["at"] < seconds:
        time.sleep(min(step, max(0.0, first["at"] + seconds - time.monotonic())))
        rss.append(service.rss_mib())
    last = service.snapshot()
    elapsed = last["at"] - first["at"]
    before = {camera["name"]: camera for camera in first["cameras"]}
    per_camera = {}
    for camera in last["cameras"]:
        start = before[camera["name"]]
        sampled = camera["sampled"] - start["sampled"]
        offline = camera["status"] != "online"
        per_camera[camera["name"]] = dict(
            sampled=sampled,
            skipped=camera["skipped_frames"] - start["skipped_frames"],
            pace=0.0 if offline else sampled / (bench.fps * elapsed),
        )
    sampled = sum(c["sampled"] for c in per_camera.values())
    encoder = last["encoder"]
    return dict(
        cameras=len(per_camera),
        seconds=elapsed,
        skipped_fraction=sum(c["skipped"] for c in per_camera.values()) / max(1, sampled),
        pace_min=min(c["pace"] for c in per_camera.values()),
        latency_p50_s=encoder["latency"]["p50"],
        latency_p95_s=encoder["latency"]["p95"],
        encoder_frames_per_s=encoder["frames_per_second"],
        batch_sizes=encoder["batch_sizes"],
        precision=encoder["precision"],
        per_camera=per_camera,
        rss_mib=rss,
    )


def _service_run(bench, count: int, seconds: float) -> dict:
    """A fresh service with ``count`` cameras, observed for ``seconds`` after the warm-up."""
    service = ServiceProcess(bench.root, bench.cameras(count), bench.cores, **bench.service_keys)
    try:
        service.start()
        time.sleep(bench.warmup)
        return observe(service, bench, seconds)
    finally:
        service.stop()


def service_trial(bench, count: int) -> dict:
    figures = _service_run(bench, count, bench.window)
    figures["rss_mib"] = figures["rss_mib"][-1]  # at the end of the window, as the peers'
    return _judged("service", figures, bench.segment_seconds)


def _judged(what: str, figures: dict, segment_seconds: float) -> dict:
    figures["keeps_up"] = keeps_up(figures, segment_seconds)
    logger.info(
        "%s, %d camera(s): %.2f%% skipped, slowest pace %.2f, p95 latency %s s: %s",
        what, figures["cameras"], 100 * figures["skipped_fraction"], figures["pace_min"],
        figures["latency_p95_s"], "keeps up" if figures["keeps_up"] else "falls behind",
    )  # fmt: skip
    return figures


def largest_passing(trial: Callable[[int], dict], start: int, most: int) -> dict:
    """The largest count in 1..``most`` whose trial keeps up (0: none), searched from ``start``
    up while trials keep up or down until one does, and every trial run."""
    trials: dict[int, dict] = {}

    def passes(count: int) -> bool:
        if count not in trials:
            trials[count] = trial(count)
        return trials[count]["keeps_up"]

    count = min(max(start, 1), most)
    if passes(count):
        while count < most and passes(count + 1):
            count += 1
    else:
        count -= 1
        while count >= 1 and not passes(count):
            count -= 1
    return dict(cameras=max(count, 0), trials=dict(sorted(trials.items())))


def service_capacity(bench, start: int) -> dict:
    return largest_passing(lambda count: service_trial(bench, count), start, bench.max_cameras)


def peer_trial(bench, count: int) -> dict:
    """``count`` tools/infer.py processes, one per camera, for the warm-up and the window after
    each labelled its first segment. Resident memory: all of them at the end. Latency: a line's
    arrival time minus its media time, less the smallest such difference of that process (so a
    lower bound); frames dropped: the summaries' counts over the whole run (infer reports them
    only at the end)."""
    peers = [
        PeerProcess(url, bench.checkpoint, bench.root / f"peer{count}_{index}.json", bench.cores)
        for index, url in enumerate(camera["url"] for camera in bench.cameras(count))
    ]
    try:
        wait_for(lambda: _first_labels(peers), "every peer's first label", START_TIMEOUT)
        started = time.monotonic()
        time.sleep(bench.warmup + bench.window)
        rss = sum(rss_mib(peer.process.pid) for peer in peers)
    finally:
        summaries = [peer.stop() for peer in peers]
    latencies, paces = [], []
    for peer in peers:
        lateness = np.array([at - line["time"] for at, line in peer.lines])
        window = [i for i, (at, _) in enumerate(peer.lines) if at >= started + bench.warmup]
        latencies += list(lateness[window] - lateness.min())
        if len(window) < 2:  # a peer that labelled at most one segment in the window
            paces.append(0.0)
            continue
        (first_at, first), (last_at, last) = peer.lines[window[0]], peer.lines[window[-1]]
        paces.append((last["time"] - first["time"]) / (last_at - first_at))
    sampled = sum(s["frames_sampled"] for s in summaries)
    figures = dict(
        cameras=count,
        seconds=bench.window,
        skipped_fraction=sum(s["frames_dropped"] for s in summaries) / max(1, sampled),
        pace_min=min(paces),
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95_s=float(np.percentile(latencies, 95)) if latencies else None,
        rss_mib=rss,
    )
    return _judged("peer", figures, bench.segment_seconds)


def _first_labels(peers: list[PeerProcess]) -> bool:
    for peer in peers:
        if peer.process.poll() is not None:
            raise RuntimeError(f"tools/infer.py exited ({peer.process.returncode}) before a label")
    return all(peer.lines for peer in peers)


def peer_capacity(bench, start: int) -> dict:
    return largest_passing(lambda count: peer_trial(bench, count), start, bench.max_cameras)


def overload(bench, count: int) -> dict:
    """``count`` cameras (more than the encoder can take) for the overload run."""
    figures = _service_run(bench, count, bench.overload_seconds)
    skipped = [camera["skipped"] for camera in figures["per_camera"].values()]
    figures["skipped_max_over_min"] = (
        max(skipped) / min(skipped) if min(skipped) else (1.0 if not max(skipped) else None)
    )
    figures["rss_growth_mib"] = figures["rss_mib"][-1] - figures["rss_mib"][0]
    return figures


def backoff_at(elapsed: float, first: float, longest: float) -> float:
    """The wait a camera is in ``elapsed`` seconds after it failed: first, doubling, capped."""
    wait = total = first
    while total < elapsed:
        wait = min(2 * wait, longest)
        total += wait
    return wait


def reconnection(bench, count: int, outage: float) -> dict:
    """``count`` cameras, one of them ('away') on its own RTSP server, which stops for
    ``outage`` seconds: how soon it is online once its server is back, and the others' encoded
    frames/s while it is away over those of the same span before."""
    away = RtspCameras({"away": bench.clip}, bench.server.cores)
    away.start()
    cameras = [*bench.cameras(count - 1), dict(name="away", url=away.url("away"))]
    service = ServiceProcess(bench.root, cameras, bench.cores, **bench.service_keys)
    try:
        service.start()
        time.sleep(bench.warmup)
        before = [service.snapshot()]
        time.sleep(outage)
        before.append(service.snapshot())
        away.stop()
        stopped = time.monotonic()
        wait_for(lambda: service.cameras()["away"]["status"] == "offline", "'away' offline", 60)
        during = [service.snapshot()]
        time.sleep(max(0.0, stopped + outage - time.monotonic()))
        during.append(service.snapshot())
        away.start()
        back = time.monotonic()
        wait_for(lambda: service.cameras()["away"]["status"] == "online", "'away' online", 300)
        online_s = time.monotonic() - back
    finally:
        service.stop()
        away.stop()
    first, longest = ServeConfig.from_dict(bench.service_keys).backoff_seconds
    others = [camera["name"] for camera in cameras if camera["name"] != "away"]
    ratios = {name: _encoded_rate(during, name) / _encoded_rate(before, name) for name in others}
    return dict(
        cameras=count,
        outage_seconds=back - stopped,
        online_after_s=online_s,
        backoff_s=backoff_at(back - during[0]["at"], first, longest),
        others_rate_ratio=ratios,
        others_rate_change_max=max(abs(ratio - 1.0) for ratio in ratios.values()),
    )


def _encoded_rate(snapshots: list[dict], name: str) -> float:
    """Frames/s the engine encoded for camera ``name`` between two snapshots."""
    first, last = ({c["name"]: c for c in s["cameras"]}[name] for s in snapshots)
    return (last["encoded"] - first["encoded"]) / (snapshots[1]["at"] - snapshots[0]["at"])


def closed_episodes(events_db) -> set[int]:
    with sqlite3.connect(events_db) as db:
        return {row[0] for row in db.execute("SELECT id FROM episodes WHERE end IS NOT NULL")}


def soak(bench) -> dict:
    """``bench.soak_cameras`` cameras for the soak run, then a restart on the same event store:
    the episodes closed before it are all still there, closed, after."""
    cameras, db = bench.cameras(bench.soak_cameras), bench.root / "soak.db"
    keys = {**bench.service_keys, "events_db": db}
    service = ServiceProcess(bench.root, cameras, bench.cores, **keys)
    try:
        service.start()
        time.sleep(bench.warmup)
        figures = observe(service, bench, bench.soak_seconds)
    finally:
        exit_code = service.stop()
    closed = closed_episodes(db)
    again = ServiceProcess(bench.root, cameras, bench.cores, **keys)
    try:
        again.start()
        kept = closed & closed_episodes(db)
    finally:
        again.stop()
    return dict(
        cameras=bench.soak_cameras,
        seconds=figures["seconds"],
        rss_mib=figures["rss_mib"],
        rss_growth_mib=figures["rss_mib"][-1] - figures["rss_mib"][0],
        latency_p95_s=figures["latency_p95_s"],
        exit_code=exit_code,
        closed_episodes=len(closed),
        closed_episodes_lost=len(closed - kept),
    )
