"""Which files are videos, for every dataset: annotations, clip listings, extraction."""

from __future__ import annotations

from pathlib import Path, PurePath

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def is_video_file(name: str | PurePath) -> bool:
    return str(name).lower().endswith(VIDEO_SUFFIXES)


def list_videos(root: Path) -> list[str]:
    """Every video file below ``root`` (any of ``VIDEO_SUFFIXES``), as sorted relative paths."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if is_video_file(path.name) and path.is_file()
    )
