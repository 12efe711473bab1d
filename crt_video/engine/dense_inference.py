"""Activity intervals in a long video from a TSU (dense) checkpoint, for tools/infer.py.

Frames are decoded and encoded chunk by chunk as for clip labelling; a dense CRT is streamed
segment by segment through its memory (constant memory in the video's length), the dense
baselines see all features at once. Each class's per-frame sigmoid scores are cut into
intervals where they exceed the checkpoint's ``dense.event_threshold``; intervals of different
classes may overlap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from crt_video.engine.inference import VideoLabeler, _segments
from crt_video.errors import VideoDecodeError
from crt_video.evaluation.detection import events_from_scores
from crt_video.features.video import probe_video, sample_frame_times
from crt_video.utils.io import atomic_write_json


class ActivityDetector(VideoLabeler):
    """A dense checkpoint's encoder and model: per-frame class scores and activity intervals."""

    @torch.inference_mode()
    def frame_scores(self, path: str | os.PathLike) -> tuple[torch.Tensor, float]:
        """Sigmoid scores [n, C] of the sampled frames, and the video's duration in seconds."""
        info = probe_video(path)
        num_frames = len(sample_frame_times(info, self.fps, self.max_frames))
        features = self._features(path, num_frames)
        if self.streaming:
            state, rows = self.model.init_state(1), []
            for segment, _ in _segments(features, self.segment_len):
                logits, state = self.model.step(segment, state)
                rows.append(logits[0])
        else:
            chunks = list(features)
            rows = [self._classify(torch.cat([c.features for c in chunks]))] if chunks else []
        if not rows:
            raise VideoDecodeError(
                f"{path}: no frame could be decoded; check the file with ffprobe"
            )
        return torch.cat(rows).float().sigmoid().cpu(), info.duration

    def detect(self, path: str | os.PathLike, dense_cfg: dict) -> dict:
        """{"video", "duration", "intervals": [{"label", "start", "end", "score"}]} (seconds)."""
        scores, duration = self.frame_scores(path)
        events = events_from_scores(
            scores.numpy(), duration, dense_cfg["event_threshold"], dense_cfg["min_event_frames"]
        )
        intervals = [
            {
                "label": self.class_names[label],
                "start": round(start, 3),
                "end": round(end, 3),
                "score": round(score, 4),
            }
            for label, start, end, score in sorted(events, key=lambda e: (e[1], e[0]))
        ]
        return {"video": str(path), "duration": round(duration, 3), "intervals": intervals}


def detect_videos(
    videos: list[Path], ckpt: dict, device: torch.device, json_path: Path | None = None
) -> int:
    """Print each video's intervals; write them to ``json_path`` (a list for several videos)."""
    detector = ActivityDetector(ckpt, device=device)
    results, failed = [], []
    for video in videos:
        try:
            result = detector.detect(video, ckpt["config"]["dense"])
        except VideoDecodeError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(video)
            continue
        results.append(result)
        print(result["video"])
        print(f"{'start':>9} {'end':>9}  label  score")
        for item in result["intervals"]:
            print(
                f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']}  {item['score']:.4f}"
            )
    if json_path and results:
        atomic_write_json(json_path, results if len(videos) > 1 else results[0])
    return 2 if failed else 0
