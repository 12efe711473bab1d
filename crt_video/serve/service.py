"""One home service: the event store, the bus, the engine and, where configured, MQTT, started
and stopped together."""

from __future__ import annotations

import torch

import crt_video
from crt_video.engine.checkpoint import Checkpoint
from crt_video.serve.config import ServeConfig
from crt_video.serve.engine import Engine
from crt_video.serve.events import EventBus, EventStore
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


class Service:
    def __init__(self, cfg: ServeConfig, ckpt: Checkpoint, device: torch.device) -> None:
        self.cfg, self.version = cfg, crt_video.__version__
        self.store, self.bus = EventStore(cfg.events_db), EventBus()
        interrupted = self.store.close_interrupted()
        if interrupted:
            logger.info(
                "%d episode(s) left open by the last run closed as interrupted", interrupted
            )
        self.engine = Engine(cfg, ckpt, device, self.store, self.bus)
        self.mqtt = None
        if cfg.mqtt is not None:
            from crt_video.serve.mqtt import MqttPublisher

            names = [camera.name for camera in cfg.cameras]
            self.mqtt = MqttPublisher(cfg.mqtt, names, ckpt.class_names, self.version)
            self.bus.listen(self.mqtt.publish)

    def start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()
        self.engine.start()

    def stop(self) -> None:
        """Close the cameras, end the open episodes (``ended_by='shutdown'``) and the outputs."""
        self.engine.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.store.close()
