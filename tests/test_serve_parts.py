"""The home service's parts: its config, the fair shares of a tick, episodes with hysteresis, and
the event store across a restart."""

from pathlib import Path

import numpy as np
import pytest

from crt_video.errors import ConfigError
from crt_video.serve.activity import ActivityTracker, EpisodeTracker
from crt_video.serve.config import EpisodeConfig, ServeConfig, load_serve_config
from crt_video.serve.events import EventStore
from crt_video.serve.frame_budget import evenly_spaced, fair_shares, frames_to_keep
from crt_video.serve.stats import LATENCY_WINDOW_SECONDS, RATE_WINDOW_SECONDS, Latencies, RateMeter

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CAMERA = dict(name="kitchen", url="rtsp://127.0.0.1:8554/kitchen")


def serve(**keys) -> ServeConfig:
    return ServeConfig.from_dict({"checkpoint": "best.pth", "cameras": [CAMERA], **keys})


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"cameras": [{**CAMERA, "url": "ftp://x/y"}]}, "unknown scheme 'ftp'"),
        (
            {"cameras": [CAMERA, {**CAMERA, "url": "/dev/video0"}]},
            "duplicate camera name 'kitchen'",
        ),
        ({"cameras": [{**CAMERA, "name": "my camera"}]}, "name 'my camera' must be"),
        ({"prot": 80}, "unknown key serve.prot; did you mean serve.port"),
        ({"cameras": [{**CAMERA, "fsp": 4}]}, "unknown key serve.cameras\\[\\].fsp; did you mean"),
        ({"port": 70000}, "serve.port=70000 must be a port number"),
        ({"host": "my-box"}, "serve.host='my-box' is not an IP address"),
        ({"token": "short"}, "serve.token must be a string of at least 8 characters"),
        ({"backoff_seconds": (5, 1)}, "0 < first <= longest"),
        ({"mqtt": {"host": "127.0.0.1", "port": "x"}}, "serve.mqtt.port='x'"),
        ({"episodes": {"threshold": 2}}, "serve.episodes.threshold=2 must be in"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        serve(**keys)
    assert "\n" not in str(err.value)


def test_defaults_listen_on_loopback_and_a_service_config_has_one_section(tmp_path):
    cfg = serve()
    assert cfg.host == "127.0.0.1" and cfg.token is None and cfg.mqtt is None
    assert cfg.cameras[0].paced is False
    assert (
        ServeConfig.from_dict({"checkpoint": "x", "cameras": [{"name": "f", "url": "a.mp4"}]})
        .cameras[0]
        .paced
    )
    path = tmp_path / "home.py"
    path.write_text("serve = dict(checkpoint='best.pth', cameras=[])\nserv = dict()\n")
    with pytest.raises(ConfigError, match="unknown key 'serv'; a service config has one section"):
        load_serve_config(path)
    path.write_text("serve = dict(checkpoint='best.pth', cameras=[])\n")
    assert load_serve_config(path, ["serve.port=8800"]).port == 8800
    demo = load_serve_config(CONFIGS / "serve" / "demo.py")
    assert demo.train_config == "configs/demo.py" and len(demo.cameras) == 3
    assert all(camera.paced for camera in demo.cameras)


def test_shares_are_even_and_the_newest_frame_is_kept():
    assert fair_shares({0: 3, 1: 2}, 8) == {0: 3, 1: 2}  # under budget: everything
    assert fair_shares({0: 20, 1: 20, 2: 20, 3: 20}, 8) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert fair_shares({0: 1, 1: 20, 2: 20}, 9) == {0: 1, 1: 4, 2: 4}  # the short one's spare
    uneven = [fair_shares({0: 9, 1: 9, 2: 9}, 7, offset=k) for k in range(3)]
    assert all(sum(s.values()) == 7 for s in uneven)
    assert [s[0] for s in uneven] != [uneven[0][0]] * 3  # the extra frame goes round
    assert evenly_spaced(10, 1) == [9] and evenly_spaced(10, 3) == [0, 4, 9]
    assert evenly_spaced(4, 8) == [0, 1, 2, 3] and evenly_spaced(5, 0) == []
    # a tick takes two encoder batches: a burst of nine frames for batches of eight is encoded
    assert frames_to_keep({0: 5, 1: 4}, 8) == {0: [0, 1, 2, 3, 4], 1: [0, 1, 2, 3]}
    assert frames_to_keep({0: 10, 1: 2}, 3) == {0: [0, 3, 6, 9], 1: [0, 1]}  # 6 a tick


def test_an_episode_opens_after_min_seconds_and_closes_with_hysteresis():
    cfg = EpisodeConfig(min_seconds=2.0, hysteresis=0.2)
    tracker = EpisodeTracker(
        "hall", ("Background", "Fall", "Walk"), cfg, 0.5, frozenset({"Background"})
    )
    scores = {0: 0.3, 1: 0.6, 2: 0.7, 3: 0.65, 4: 0.35, 5: 0.6, 6: 0.2, 7: 0.1, 8: 0.1, 9: 0.1}
    log = []
    for second, fall in scores.items():
        for change in tracker.update(float(second), np.array([0.9, fall, 0.0])):
            if change.episode is not None:
                log.append(
                    (change.kind, change.episode.label, change.episode.start, change.episode.end)
                )
    # at or above 0.5 from t=1: opens at t=3 (2 s), starting at 1; 0.35 stays above 0.3;
    # below 0.3 from t=6: closes at t=8, ending at 6
    assert ("opened", "Fall", 1.0, None) in [
        (k, lab, s, None) for k, lab, s, _ in log if k == "opened"
    ]
    closed = [entry for entry in log if entry[0] == "closed"]
    assert closed == [("closed", "Fall", 1.0, 6.0)]
    assert not any(label == "Background" for _, label, _, _ in log)
    assert tracker.activity.label in ("Fall", "Walk")


def test_clip_activity_runs_are_episodes():
    tracker = ActivityTracker("kitchen", ("Cook", "Drink"))
    kinds = []
    for at, scores in [(0, [0.8, 0.2]), (4, [0.7, 0.3]), (8, [0.1, 0.9])]:
        kinds += [
            (c.kind, c.episode.label if c.episode else c.activity.label)
            for c in tracker.update(at, np.array(scores))
        ]
    assert kinds == [
        ("activity", "Cook"),
        ("opened", "Cook"),
        ("updated", "Cook"),
        ("closed", "Cook"),
        ("activity", "Drink"),
        ("opened", "Drink"),
    ]
    (closed,) = tracker.close(10.0, "shutdown")
    assert closed.episode.end == 10.0 and closed.episode.ended_by == "shutdown"


def test_the_store_survives_a_restart_and_closes_what_a_crash_left_open(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    tracker = ActivityTracker("kitchen", ("Cook", "Drink"))
    for at, scores in [(100, [0.8, 0.2]), (104, [0.1, 0.9]), (108, [0.1, 0.95])]:
        for change in tracker.update(at, np.array(scores)):
            store.record(change, at)
    store.close()  # the process dies without closing "Drink"
    again = EventStore(path)
    assert again.close_interrupted() == 1
    episodes = again.query()
    assert [(e.label, e.start, e.end, e.ended_by) for e in episodes] == [
        ("Drink", 104.0, 108.0, "interrupted"),
        ("Cook", 100.0, 104.0, "activity"),
    ]
    assert [e.label for e in again.query(since=105)] == ["Drink"]
    assert [e.label for e in again.query(camera="hall")] == []
    assert again.query(until=101)[0].label == "Cook"


def test_latency_and_rate_cover_the_last_seconds_not_the_last_labels():
    now = [0.0]
    latencies, rate = Latencies(clock=lambda: now[0]), RateMeter(clock=lambda: now[0])
    for _ in range(5000):  # a busy minute long ago
        latencies.add(9.0)
        rate.add(3)
    now[0] = LATENCY_WINDOW_SECONDS + 1.0
    assert latencies.percentiles() == {"p50": None, "p95": None}
    assert rate.rate() == 0.0
    for seconds in (0.2, 0.4, 0.6):
        latencies.add(seconds)
    rate.add(20)
    assert latencies.percentiles()["p50"] == 0.4
    assert rate.rate() == 20 / RATE_WINDOW_SECONDS
