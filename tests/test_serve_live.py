"""The home service run for real: tools/serve.py as a process, cameras over RTSP from a GStreamer
server that stops and comes back, the live page in headless Chromium, MQTT through a mosquitto
broker, one-line start-up errors, SIGTERM and the token."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from test_infer import CLASSES, CRT, make_checkpoint

from benchmarks.rtsp_cameras import RtspCameras, missing_packages
from benchmarks.serve_procs import ServiceProcess, free_port, wait_for

pytestmark = pytest.mark.slow

TIMEOUT = 90.0  # generous: other work may share the cores
# Short waits, so that a camera's failure and its return show within seconds.
FAST = dict(stall_seconds=2.0, backoff_seconds=(0.5, 1.0))


def lacking(what: str) -> None:
    """Skip for want of a system package; a failure where .ci/run installed them all."""
    if os.environ.get("CRT_VIDEO_SYSTEM_PACKAGES") == "installed":
        pytest.fail(f"{what}, though .ci/run installs it")
    pytest.skip(what)


wait_for = functools.partial(wait_for, timeout=TIMEOUT)


def one_line(text: str | None) -> bool:
    return bool(text) and "\n" not in text


@dataclass
class Clips:
    short: str  # a glob of three 2 s clips: each is a session, so episodes close and open
    long: Path  # 30 s


@pytest.fixture(scope="module")
def clips(tmp_path_factory, write_test_video) -> Clips:
    root = tmp_path_factory.mktemp("serve_clips")
    for index in range(3):
        write_test_video(root / f"short_{index}.mp4", seconds=2.0, size=(96, 128))
    long = write_test_video(root / "long.mp4", seconds=30.0, size=(96, 128))
    return Clips(str(root / "short_*.mp4"), long)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve_ckpt") / "crt.pth")


@pytest.fixture
def run_service(tmp_path, checkpoint) -> Iterator[Callable[..., ServiceProcess]]:
    """``run_service(cameras, **serve_keys)``: a started service (answering /healthz, its
    cameras in any state), killed at the end if still running."""
    started: list[ServiceProcess] = []

    def run(cameras: list[dict], **keys) -> ServiceProcess:
        service = ServiceProcess(tmp_path, cameras, checkpoint=str(checkpoint), **{**FAST, **keys})
        started.append(service)
        return service.start(online=False, timeout=TIMEOUT)

    yield run
    for service in started:
        service.kill()


# 1. RTSP cameras and reconnection.


@pytest.fixture
def rtsp_cameras() -> Iterator[Callable[[dict[str, Path]], RtspCameras]]:
    reason = missing_packages()
    if reason:
        lacking(reason)
    servers: list[RtspCameras] = []

    def start(mounts: dict[str, Path]) -> RtspCameras:
        server = RtspCameras(mounts)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def test_rtsp_cameras_go_offline_when_the_server_stops_and_reconnect_when_it_returns(
    run_service, rtsp_cameras, clips
):
    server = rtsp_cameras({"kitchen": clips.long, "hall": clips.long})
    closed_port = free_port()
    service = run_service(
        [
            dict(name="kitchen", url=server.url("kitchen")),
            dict(name="hall", url=server.url("hall")),
            dict(name="garage", url=f"rtsp://127.0.0.1:{closed_port}/x"),
        ]
    )
    live = ("kitchen", "hall")
    cameras = service.wait_cameras(
        lambda cams: (
            all(cams[n]["status"] == "online" and cams[n]["processed_fps"] > 0 for n in live)
            and cams["garage"]["status"] == "offline"
        ),
        "both RTSP cameras online and labelled, the unreachable one offline",
        TIMEOUT,
    )
    garage = cameras["garage"]["last_error"]
    assert one_line(garage) and f"127.0.0.1:{closed_port}" in garage
    assert "cannot open the stream" in garage
    before = {name: cameras[name]["reconnects"] for name in live}

    server.stop()
    cameras = service.wait_cameras(
        lambda cams: all(cams[n]["status"] == "offline" for n in live),
        "both cameras offline once the RTSP server stopped",
        TIMEOUT,
    )
    for name in live:
        assert one_line(cameras[name]["last_error"]), cameras[name]

    server.start()  # the same port again
    longest_backoff = FAST["backoff_seconds"][1]
    cameras = service.wait_cameras(
        lambda cams: all(
            cams[n]["status"] == "online" and cams[n]["reconnects"] > before[n] for n in live
        ),
        "both cameras back online after the RTSP server returned",
        timeout=longest_backoff + 30,
    )
    assert cameras["garage"]["status"] == "offline"


# 2. The live page in a real browser.


@pytest.fixture
def chromium(tmp_path):
    """Debian's Chromium, headless, driven by its chromedriver."""
    for program, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(program) is None:
            lacking(f"needs {program} (the Debian package {package})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        options=options, service=DriverService(executable_path=shutil.which("chromedriver"))
    )
    yield driver
    driver.quit()


def test_the_live_page_shows_camera_tiles_an_activity_and_new_events_without_a_reload(
    run_service, chromium, clips, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    service = run_service(
        [dict(name="kitchen", url=clips.short), dict(name="hall", url=str(clips.long))]
    )
    chromium.get(service.url("/"))
    wait = WebDriverWait(chromium, TIMEOUT)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tiles .tile")) == 2)
    tiles = chromium.find_elements(By.CSS_SELECTOR, "#tiles .tile")
    assert [tile.get_attribute("data-camera") for tile in tiles] == ["kitchen", "hall"]
    labels_js = (
        "return [...document.querySelectorAll('#tiles .activity')]"
        ".map((node) => node.firstChild ? node.firstChild.textContent : '')"
    )
    labels = wait.until(lambda d: [x for x in d.execute_script(labels_js) if x in CLASSES])
    assert labels
    chromium.execute_script("window.notReloaded = true")
    count = len(chromium.find_elements(By.CSS_SELECTOR, "#event-list li"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#event-list li")) > count)
    assert chromium.execute_script("return window.notReloaded") is True
    item = chromium.find_element(By.CSS_SELECTOR, "#event-list li")
    assert item.get_attribute("data-action") in ("opened", "closed")
    assert any(f": {label} " in item.text for label in CLASSES), item.text

    screenshot = tmp_path / "live_page.png"
    assert chromium.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
    if os.environ.get("CRT_VIDEO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["CRT_VIDEO_SCREENSHOT"])


# 3. MQTT against a real broker.


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[int]:
    """A mosquitto broker on a free loopback port (anonymous), its port."""
    program = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if program is None:
        lacking("needs mosquitto (the Debian package mosquitto)")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(
        [program, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, "mosquitto to listen", timeout=30)
        yield port
    finally:
        broker.terminate()
        broker.wait(10)


class Subscriber:
    """A paho-mqtt client that keeps every message of its topics as (topic, payload, retain)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._lock, self._subscribed = threading.Lock(), threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *_: client.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(30), "no SUBACK from the broker"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str, retained: bool | None = None) -> list[str]:
        """The payloads of ``topic`` so far (only retained ones, or only live ones)."""
        with self._lock:
            return [p for t, p, r in self.messages if t == topic and retained in (None, r)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_sends_discovery_activities_episodes_and_status_to_a_broker(
    run_service, mosquitto, clips
):
    prefix, names = "crt_test", ("kitchen", "hall")
    topics = [f"{prefix}/#", "homeassistant/#"]
    live = Subscriber(mosquitto, topics)
    service = run_service(
        [dict(name="kitchen", url=clips.short), dict(name="hall", url=str(clips.long))],
        mqtt=dict(host="127.0.0.1", port=mosquitto, prefix=prefix),
    )

    def event_types() -> set[str]:
        return {json.loads(p)["event_type"] for p in live.on(f"{prefix}/kitchen/event")}

    # kitchen's files are sessions of 2 s: each ends its episode and the next opens one
    wait_for(lambda: {"opened", "closed"} <= event_types(), "kitchen's episodes opened, closed")
    assert event_types() == {"opened", "closed"}
    for payload in live.on(f"{prefix}/kitchen/event"):
        event = json.loads(payload)
        assert event["label"] in CLASSES and 0 <= event["score"] <= 1
        datetime.fromisoformat(event["start"])
        assert (event["end"] is None) == (event["event_type"] == "opened")

    # a client that subscribes later gets what was retained, flagged as such
    late = Subscriber(mosquitto, topics)
    retained = {
        f"homeassistant/{component}/crt_video_{name}/config": component
        for name in names
        for component in ("sensor", "event")
    }
    for name in names:
        retained[f"{prefix}/{name}/activity"] = "activity"
    retained[f"{prefix}/status"] = "status"
    wait_for(
        lambda: all(late.on(topic, retained=True) for topic in retained),
        f"retained messages on {sorted(retained)}",
        timeout=30,
    )
    assert late.on(f"{prefix}/status", retained=True)[-1] == "online"
    assert not late.on(f"{prefix}/kitchen/event", retained=True)  # episodes are not retained
    for name in names:
        sensor = json.loads(late.on(f"homeassistant/sensor/crt_video_{name}/config", True)[-1])
        assert sensor["state_topic"] == f"{prefix}/{name}/activity"
        assert sensor["availability_topic"] == f"{prefix}/status"
        assert sensor["unique_id"] == f"crt_video_{name}_activity"
        event = json.loads(late.on(f"homeassistant/event/crt_video_{name}/config", True)[-1])
        assert event["state_topic"] == f"{prefix}/{name}/event"
        assert event["event_types"] == ["opened", "closed"]
        assert sensor["device"]["identifiers"] == event["device"]["identifiers"]
        activity = json.loads(late.on(f"{prefix}/{name}/activity", True)[-1])
        assert set(activity) == {"label", "score", "since"}
        assert activity["label"] in CLASSES and 0 <= activity["score"] <= 1
        datetime.fromisoformat(activity["since"])
    late.close()

    assert service.stop() == 0
    wait_for(
        lambda: live.on(f"{prefix}/status")[-1:] == ["offline"],
        "status offline after the service stopped",
        timeout=30,
    )
    live.close()
    after = Subscriber(mosquitto, [f"{prefix}/status"])
    wait_for(lambda: after.on(f"{prefix}/status", retained=True), "the retained status", timeout=30)
    assert after.on(f"{prefix}/status", retained=True) == ["offline"]
    after.close()


# 4. The process: start-up errors, SIGTERM, the token.


def full_checkpoint(root: Path) -> Path:
    full = {key: CRT[key] for key in ("d_model", "depth", "heads", "dropout")}
    return make_checkpoint(root / "full.pth", model={"type": "full", **full})


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown scheme", "unknown scheme 'ftp'"),
        ("duplicate names", "duplicate camera name 'hall'"),
        ("misspelt key", "unknown key serve.stall_second; did you mean serve.stall_seconds"),
        ("port in use", "is in use"),
        ("full model", "cannot label a live camera"),
        ("missing checkpoint", "does not exist; train one first"),
    ],
)
def test_a_start_up_error_is_one_line_and_a_non_zero_exit(
    case, message, checkpoint, clips, tmp_path, run_tool
):
    hall = dict(name="hall", url=str(clips.long))
    keys = dict(
        checkpoint=str(checkpoint),
        cameras=[hall],
        port=free_port(),
        events_db=str(tmp_path / "events.db"),
    )
    taken = None
    if case == "unknown scheme":
        keys["cameras"] = [dict(name="hall", url="ftp://127.0.0.1/hall")]
    elif case == "duplicate names":
        keys["cameras"] = [hall, dict(hall, url=str(clips.short))]
    elif case == "misspelt key":
        keys["stall_second"] = 2.0
    elif case == "port in use":
        taken = socket.socket()
        taken.bind(("127.0.0.1", keys["port"]))
        taken.listen()
    elif case == "full model":
        keys["checkpoint"] = str(full_checkpoint(tmp_path))
    elif case == "missing checkpoint":
        keys["checkpoint"] = str(tmp_path / "none" / "best.pth")
    config = tmp_path / "serve.py"
    config.write_text(f"serve = {keys!r}\n")
    try:
        result = run_tool("tools/serve.py", str(config))
    finally:
        if taken is not None:
            taken.close()
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""
    if case != "full model":  # refused before the event store is opened
        assert not (tmp_path / "events.db").exists()


def test_sigterm_exits_0_and_ends_the_open_episodes_as_shutdown(run_service, clips):
    service = run_service([dict(name="hall", url=str(clips.long))])
    wait_for(lambda: service.get("/readyz").status_code == 200, "/readyz 200")
    wait_for(
        lambda: [e for e in service.get("/api/events").json() if e["end"] is None],
        "an open episode",
    )
    assert service.stop() == 0, service.log()
    with sqlite3.connect(service.events_db) as db:
        episodes = db.execute("SELECT id, end, ended_by FROM episodes ORDER BY id").fetchall()
    assert episodes and all(end is not None for _, end, _ in episodes), episodes
    assert episodes[-1][2] == "shutdown", episodes  # the one open at the end


def test_a_token_guards_every_route_but_healthz(run_service, clips):
    token = "a-long-test-token"
    service = run_service([dict(name="hall", url=str(clips.long))], token=token)
    cameras = service.url("/api/cameras")
    assert httpx.get(service.url("/healthz")).status_code == 200
    assert httpx.get(cameras).status_code == 401
    assert httpx.get(cameras, headers={"Authorization": "Bearer wrong-token-1"}).status_code == 401
    assert httpx.get(cameras, params={"token": "wrong-token-1"}).status_code == 401
    for route in ("/", "/readyz", "/api/events", "/api/stats", "/metrics"):
        assert httpx.get(service.url(route)).status_code == 401, route
    good = httpx.get(cameras, headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200 and [c["name"] for c in good.json()] == ["hall"]
    assert httpx.get(cameras, params={"token": token}).status_code == 200
