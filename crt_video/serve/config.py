"""The config's ``serve`` section: the checkpoint, the cameras, where events go and how the service
listens, each value checked when the section is read, so a bad one stops the service at start-up
with one line naming it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from crt_video.config import load_config
from crt_video.decode import CAMERA_PREFIX, LIVE_URL_SCHEMES
from crt_video.errors import ConfigError
from crt_video.utils.sections import section_from_dict

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
BACKENDS = ("local", "triton")


@dataclass(frozen=True)
class CameraConfig:
    """One camera: a stream URL (rtsp://, http(s)://, udp://, ...), a device (/dev/videoN), a video
    file, or a glob of video files played one after the other (each its own session, like a
    camera that reconnects). ``fps``: frames sampled per second (None: the checkpoint's rate);
    ``realtime``: a file is replayed at its own pace (None: yes for files)."""

    name: str
    url: str
    fps: float | None = None
    enabled: bool = True
    realtime: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"serve.cameras: name {self.name!r} must be 1-63 letters, digits, '_' or '-' "
                "(it names the camera in URLs and MQTT topics)"
            )
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError(f"serve.cameras[{self.name}].url must be a non-empty string")
        if "://" in self.url and not self.url.startswith(LIVE_URL_SCHEMES):
            scheme = self.url.split("://", 1)[0]
            raise ConfigError(
                f"serve.cameras[{self.name}].url {self.url!r}: unknown scheme {scheme!r}; use one "
                f"of {', '.join(s[:-3] for s in LIVE_URL_SCHEMES)}, a device or a file"
            )
        if self.fps is not None and not (isinstance(self.fps, int | float) and self.fps > 0):
            raise ConfigError(f"serve.cameras[{self.name}].fps={self.fps!r} must be > 0 or None")

    @property
    def is_file(self) -> bool:
        return "://" not in self.url and not self.url.startswith(CAMERA_PREFIX)

    @property
    def paced(self) -> bool:
        """Whether frames are released at the media's own pace (files by default)."""
        return self.is_file if self.realtime is None else bool(self.realtime)


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT broker episodes and activities are published to, and the Home Assistant MQTT
    discovery prefix (None: no discovery messages)."""

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "crt_video"
    discovery_prefix: str | None = "homeassistant"
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        _check_port("serve.mqtt.port", self.port)
        if not isinstance(self.prefix, str) or not self.prefix or "#" in self.prefix:
            raise ConfigError(f"serve.mqtt.prefix={self.prefix!r} must be a topic without '#'")


@dataclass(frozen=True)
class EpisodeConfig:
    """When a per-frame class's scores make an episode: it opens once the score stays at or above
    ``threshold`` (None: the checkpoint's dense.event_threshold) for ``min_seconds``, and closes
    once it stays below ``threshold - hysteresis`` for ``min_seconds``."""

    threshold: float | None = None
    min_seconds: float = 2.0
    hysteresis: float = 0.15

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"serve.episodes.threshold={self.threshold!r} must be in (0, 1)")
        if not self.min_seconds >= 0:
            raise ConfigError(f"serve.episodes.min_seconds={self.min_seconds!r} must be >= 0")
        if not 0 <= self.hysteresis < 1:
            raise ConfigError(f"serve.episodes.hysteresis={self.hysteresis!r} must be in [0, 1)")


@dataclass(frozen=True)
class ServeConfig:
    """The whole ``serve`` section."""

    checkpoint: str
    cameras: tuple[CameraConfig, ...] = ()
    host: str = "127.0.0.1"  # beyond loopback only when set explicitly (e.g. "0.0.0.0")
    port: int = 8700
    events_db: str = "work_dirs/serve/events.db"
    token: str | None = None  # when set, every route but /healthz needs it (Bearer or ?token=)
    mqtt: MqttConfig | None = None
    # a missing checkpoint is trained first with this config (the demo); None: an error
    train_config: str | None = None
    stall_seconds: float = 10.0  # no frame for this long: the camera is offline and retried
    backoff_seconds: tuple[float, float] = (1.0, 30.0)  # first and longest wait between tries
    # a gap in a camera's frames longer than this resets its memory; shorter gaps keep it
    reset_gap_seconds: float = 30.0
    batch_frames: int | None = None  # frames per encoder call (None: the encoder's batch)
    tick_seconds: float = 0.25  # a tick ends when its batch is full or this has passed
    window_seconds: float = 10.0  # clip checkpoints: the activity is that of the current window
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    device: str = "auto"
    # 'triton': the encoder and the step run in a Triton server on the checkpoint's exported
    # repository (docs/triton.md), at triton_url (its gRPC address), instead of in this process
    backend: str = "local"
    triton_url: str | None = None

    @classmethod
    def from_dict(cls, section: dict) -> ServeConfig:
        section = dict(section)
        cameras = section.get("cameras", ())
        if not isinstance(cameras, list | tuple):
            raise ConfigError("serve.cameras must be a list of dict(name=..., url=...)")
        section["cameras"] = tuple(
            section_from_dict(CameraConfig, camera, "serve.cameras[]") for camera in cameras
        )
        if section.get("mqtt") is not None:
            section["mqtt"] = section_from_dict(MqttConfig, section["mqtt"], "serve.mqtt")
        section["episodes"] = section_from_dict(
            EpisodeConfig, section.get("episodes") or {}, "serve.episodes"
        )
        if "backoff_seconds" in section:
            section["backoff_seconds"] = tuple(section["backoff_seconds"])
        return section_from_dict(cls, section, "serve")

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise ConfigError("serve.checkpoint must name a checkpoint file (best.pth)")
        names = [camera.name for camera in self.cameras]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"serve.cameras: duplicate camera name {duplicates[0]!r}")
        _check_host(self.host)
        _check_port("serve.port", self.port)
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise ConfigError("serve.token must be a string of at least 8 characters, or None")
        first, longest = self.backoff_seconds if len(self.backoff_seconds) == 2 else (0, 0)
        if not 0 < first <= longest:
            raise ConfigError(
                f"serve.backoff_seconds={self.backoff_seconds!r} must be (first, longest) "
                "with 0 < first <= longest"
            )
        for key in ("stall_seconds", "reset_gap_seconds", "tick_seconds", "window_seconds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"serve.{key}={value!r} must be a positive number of seconds")
        if self.batch_frames is not None and not (
            isinstance(self.batch_frames, int) and self.batch_frames >= 1
        ):
            raise ConfigError(f"serve.batch_frames={self.batch_frames!r} must be >= 1 or None")
        _check_backend(self.backend, self.triton_url)


def load_serve_config(path: str | Path, cfg_options: list[str] | None = None) -> ServeConfig:
    """A service config file (``_base_`` and ``--cfg-options`` as for training): its ``serve``
    section, checked. A top-level key other than ``serve`` is refused, with the closest name."""
    cfg = load_config(path, cfg_options, required=("serve",))
    for key in cfg:
        if not key.startswith("_") and key != "serve":
            raise ConfigError(
                f"{path}: unknown key {key!r}; a service config has one section, serve = dict(...)"
            )
    try:
        return ServeConfig.from_dict(cfg["serve"])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _check_port(name: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port!r} must be a port number (0-65535)")


def _check_backend(backend: object, url: object) -> None:
    if backend not in BACKENDS:
        raise ConfigError(
            f"serve.backend={backend!r} must be one of {', '.join(map(repr, BACKENDS))}"
        )
    if url is not None and (not isinstance(url, str) or not url or "://" in url):
        raise ConfigError(
            f"serve.triton_url={url!r} must be the Triton server's gRPC address as host:port, "
            "without a scheme, e.g. triton_url='localhost:8001'"
        )
    if backend == "triton" and url is None:
        raise ConfigError(
            "serve.backend='triton' needs serve.triton_url, the Triton server's gRPC address, "
            "e.g. triton_url='localhost:8001'"
        )


def _check_host(host: object) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"serve.host={host!r} must be an address such as 127.0.0.1")
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"serve.host={host!r} is not an IP address; use 127.0.0.1 (this machine only) or "
            "0.0.0.0 (every interface)"
        ) from None
