"""What a camera is doing, from the model's scores: the current activity, and episodes.

- A clip checkpoint gives one distribution over the classes per segment (the current window's
  memory so far): the camera's activity is its top class, and a run of the same activity is an
  episode, opened when the activity appears and closed when another takes its place.
- A per-frame checkpoint (dense, online) gives every frame a score per class: a class's episode
  opens once its score has stayed at or above the threshold for ``min_seconds`` (it starts where
  that run began) and closes once it has stayed below ``threshold - hysteresis`` for
  ``min_seconds`` (it ends where that run began); its score is the highest seen. The activity is
  the frame's top class.

Each tracker returns the changes it made, as :class:`Change` records for the event store and bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crt_video.serve.config import EpisodeConfig


@dataclass
class Episode:
    camera: str
    label: str
    start: float  # seconds since the epoch
    end: float | None  # None while open
    score: float
    id: int | None = None  # the event store's
    ended_by: str | None = None  # activity, reset, shutdown, interrupted


@dataclass
class Activity:
    camera: str
    label: str
    score: float
    since: float  # seconds since the epoch at which this label became the camera's activity
    top_k: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Change:
    kind: str  # "opened", "updated", "closed" (an episode) or "activity"
    episode: Episode | None = None
    activity: Activity | None = None


def top_k(scores: np.ndarray, class_names: tuple[str, ...], k: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(-scores)[:k]
    return [(class_names[i], round(float(scores[i]), 4)) for i in order]


class ActivityTracker:
    """A camera's current activity and its runs as episodes (clip checkpoints)."""

    def __init__(self, camera: str, class_names: tuple[str, ...]) -> None:
        self.camera, self.class_names = camera, class_names
        self.activity: Activity | None = None
        self.episode: Episode | None = None

    def update(self, at: float, scores: np.ndarray) -> list[Change]:
        best = int(np.argmax(scores))
        label, score = self.class_names[best], float(scores[best])
        changes: list[Change] = []
        if self.activity is not None and self.activity.label == label:
            self.activity.score, self.activity.top_k = score, top_k(scores, self.class_names)
            self.episode.score = max(self.episode.score, score)
            return [Change("updated", self.episode)]
        changes += self.close(at, "activity")
        self.activity = Activity(self.camera, label, score, at, top_k(scores, self.class_names))
        self.episode = Episode(self.camera, label, at, None, score)
        return [
            *changes,
            Change("activity", activity=self.activity),
            Change("opened", self.episode),
        ]

    def close(self, at: float, reason: str) -> list[Change]:
        if self.episode is None:
            return []
        self.episode.end, self.episode.ended_by = at, reason
        closed, self.episode = self.episode, None
        if reason != "activity":
            self.activity = None
        return [Change("closed", closed)]


class EpisodeTracker:
    """Per class, episodes of a camera's per-frame scores, opened and closed with hysteresis."""

    def __init__(
        self,
        camera: str,
        class_names: tuple[str, ...],
        cfg: EpisodeConfig,
        threshold: float,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.camera, self.class_names, self.cfg = camera, class_names, cfg
        self.high, self.low = threshold, threshold - cfg.hysteresis
        self.tracked = [i for i, name in enumerate(class_names) if name not in skip]
        self.open: dict[int, Episode] = {}
        self.run_start: dict[int, float] = {}  # where the current run above (or below) began
        self.run_best: dict[int, float] = {}
        self.activity: Activity | None = None

    def update(self, at: float, scores: np.ndarray) -> list[Change]:
        changes = self._activity(at, scores)
        for c in self.tracked:
            score = float(scores[c])
            if c in self.open:
                changes += self._while_open(c, at, score)
            else:
                changes += self._while_closed(c, at, score)
        return changes

    def close(self, at: float, reason: str) -> list[Change]:
        changes = []
        for c in list(self.open):
            episode = self.open.pop(c)
            episode.end, episode.ended_by = at, reason
            changes.append(Change("closed", episode))
        self.run_start.clear()
        self.run_best.clear()
        self.activity = None
        return changes

    def _activity(self, at: float, scores: np.ndarray) -> list[Change]:
        best = max(self.tracked, key=lambda c: scores[c])
        label, score = self.class_names[best], float(scores[best])
        names = tuple(self.class_names[c] for c in self.tracked)
        ranked = top_k(scores[self.tracked], names)
        if self.activity is not None and self.activity.label == label:
            self.activity.score, self.activity.top_k = score, ranked
            return []
        self.activity = Activity(self.camera, label, score, at, ranked)
        return [Change("activity", activity=self.activity)]

    def _while_closed(self, c: int, at: float, score: float) -> list[Change]:
        if score < self.high:
            self.run_start.pop(c, None)
            self.run_best.pop(c, None)
            return []
        start = self.run_start.setdefault(c, at)
        self.run_best[c] = max(self.run_best.get(c, score), score)
        if at - start < self.cfg.min_seconds:
            return []
        self.open[c] = Episode(self.camera, self.class_names[c], start, None, self.run_best[c])
        self.run_start.pop(c)
        return [Change("opened", self.open[c])]

    def _while_open(self, c: int, at: float, score: float) -> list[Change]:
        episode = self.open[c]
        if score >= self.low:
            self.run_start.pop(c, None)
            if score > episode.score:
                episode.score = score
                return [Change("updated", episode)]
            return []
        start = self.run_start.setdefault(c, at)
        if at - start < self.cfg.min_seconds:
            return []
        episode.end, episode.ended_by = start, "activity"
        del self.open[c]
        self.run_start.pop(c)
        return [Change("closed", episode)]
