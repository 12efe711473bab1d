"""Episodes and activities to an MQTT broker, with Home Assistant's MQTT discovery.

Topics, under ``serve.mqtt.prefix``:
- ``<prefix>/<camera>/activity`` (retained): ``{"label", "score", "since"}`` on every change;
- ``<prefix>/<camera>/event``: ``{"event_type": "opened"|"closed", "id", "label", "start",
  "end", "score"}`` for each episode opened or closed;
- ``<prefix>/status`` (retained): ``online``, or ``offline`` (also the broker's last will).

With ``discovery_prefix`` set, each camera appears in Home Assistant as a sensor (its activity)
and an event entity (its episodes), grouped as one device.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from crt_video.serve.activity import Change
from crt_video.serve.config import MqttConfig
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


class MqttPublisher:
    def __init__(
        self, cfg: MqttConfig, cameras: list[str], class_names: tuple[str, ...], version: str
    ) -> None:
        self.cfg, self.cameras, self.version = cfg, cameras, version
        self.class_names = class_names
        self.status_topic = f"{cfg.prefix}/status"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"crt_video-{cfg.prefix.replace('/', '-')}"
        )
        if cfg.username is not None:
            self.client.username_pw_set(cfg.username, cfg.password)
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 30)

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself when the broker comes back."""
        self.client.connect_async(self.cfg.host, self.cfg.port)
        self.client.loop_start()

    def stop(self) -> None:
        if self.client.is_connected():
            self.client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(
                2
            )
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, change: Change) -> None:
        """The bus's listener: an activity (retained) or an opened or closed episode."""
        if change.kind == "activity":
            activity = change.activity
            payload = {
                "label": activity.label,
                "score": round(activity.score, 4),
                "since": _iso(activity.since),
            }
            self._send(f"{self.cfg.prefix}/{activity.camera}/activity", payload, retain=True)
        elif change.kind in ("opened", "closed"):
            episode = change.episode
            payload = {
                "event_type": change.kind,
                "id": episode.id,
                "label": episode.label,
                "start": _iso(episode.start),
                "end": None if episode.end is None else _iso(episode.end),
                "score": round(episode.score, 4),
                "ended_by": episode.ended_by,
            }
            self._send(f"{self.cfg.prefix}/{episode.camera}/event", payload, retain=False)

    def _send(self, topic: str, payload: dict | str, retain: bool) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        self.client.publish(topic, body, qos=1, retain=retain)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning(
                "MQTT broker %s:%s refused: %s", self.cfg.host, self.cfg.port, reason_code
            )
            return
        logger.info("MQTT: connected to %s:%s", self.cfg.host, self.cfg.port)
        if self.cfg.discovery_prefix is not None:
            for camera in self.cameras:
                for component, config in self._discovery(camera).items():
                    topic = f"{self.cfg.discovery_prefix}/{component}/crt_video_{camera}/config"
                    self._send(topic, config, retain=True)
        self._send(self.status_topic, "online", retain=True)

    def _discovery(self, camera: str) -> dict[str, dict]:
        """Home Assistant MQTT discovery configs of one camera's entities."""
        device = {
            "identifiers": [f"crt_video_{self.cfg.prefix}"],
            "name": "crt_video home service",
            "model": "Compact Recurrent Transformer",
            "sw_version": self.version,
        }
        shared = {
            "availability_topic": self.status_topic,
            "device": device,
            "json_attributes_topic": f"{self.cfg.prefix}/{camera}/activity",
        }
        return {
            "sensor": {
                **shared,
                "name": f"{camera} activity",
                "unique_id": f"crt_video_{camera}_activity",
                "state_topic": f"{self.cfg.prefix}/{camera}/activity",
                "value_template": "{{ value_json.label }}",
                "icon": "mdi:human-handsup",
            },
            "event": {
                **shared,
                "name": f"{camera} episode",
                "unique_id": f"crt_video_{camera}_episode",
                "state_topic": f"{self.cfg.prefix}/{camera}/event",
                "event_types": ["opened", "closed"],
                "json_attributes_topic": f"{self.cfg.prefix}/{camera}/event",
            },
        }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()
