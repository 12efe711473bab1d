"""Where the service's episodes go: an SQLite file (WAL), which outlives the process, and a bus
that hands every change to its listeners (the HTTP event stream, MQTT) as it happens.

An episode is written when it opens and again at every update, so a crash loses at most the
ends of the episodes open at that moment: the next start closes them where they were last seen
(``ended_by='interrupted'``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from crt_video.serve.activity import Change, Episode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    score REAL NOT NULL,
    last_seen REAL NOT NULL,
    ended_by TEXT
);
CREATE INDEX IF NOT EXISTS episodes_by_start ON episodes (start);
CREATE INDEX IF NOT EXISTS episodes_by_camera ON episodes (camera, start);
"""
_COLUMNS = "id, camera, label, start, end, score, ended_by"


class EventStore:
    """Episodes in SQLite; one connection shared by the engine (writes) and the API (reads)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def record(self, change: Change, seen: float) -> None:
        """Write an episode's change (``seen``: the time of the frame that made it)."""
        episode = change.episode
        if episode is None:
            return
        with self._lock:
            if change.kind == "opened":
                cursor = self._db.execute(
                    "INSERT INTO episodes (camera, label, start, score, last_seen) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (episode.camera, episode.label, episode.start, episode.score, seen),
                )
                episode.id = cursor.lastrowid
            elif episode.id is not None:
                self._db.execute(
                    "UPDATE episodes SET end = ?, score = ?, last_seen = ?, ended_by = ? "
                    "WHERE id = ?",
                    (episode.end, episode.score, seen, episode.ended_by, episode.id),
                )

    def close_interrupted(self) -> int:
        """Close the episodes a previous process left open, where they were last seen."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE episodes SET end = last_seen, ended_by = 'interrupted' WHERE end IS NULL"
            )
        return cursor.rowcount

    def query(
        self,
        camera: str | None = None,
        label: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
    ) -> list[Episode]:
        """Episodes, newest first, that overlap [since, until]."""
        clauses, values = [], []
        for column, value in (("camera", camera), ("label", label)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            clauses.append("(end IS NULL OR end >= ?)")
            values.append(since)
        if until is not None:
            clauses.append("start <= ?")
            values.append(until)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM episodes {where} ORDER BY start DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*values, limit)).fetchall()
        return [
            Episode(camera, label, start, end, score, id_, ended_by)
            for id_, camera, label, start, end, score, ended_by in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class EventBus:
    """Hands every change to each listener, in the engine's thread; a listener must not block
    (the HTTP stream and MQTT queue what they get)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Change], None]] = []
        self._lock = threading.Lock()

    def listen(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Add ``listener``; returns the function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def publish(self, change: Change) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(change)
