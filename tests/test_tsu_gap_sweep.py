"""The gap-sweep set: a cue early in half the videos, then events whose label depends on it, at
gaps spread over the log scale; TSU's own label indices; refused when made with other settings."""

import json

import numpy as np
import pytest

from crt_video.data.tsu import TSU_CLASSES, read_tsu_annotations
from crt_video.data.tsu_gap_sweep import (
    AFTER_CUE,
    CUE,
    FLICKER,
    FPS,
    PLAIN,
    SQUARES_PER_VIDEO,
    render_video,
)
from crt_video.data.tsu_generated import check_generated_tsu, make_generated_tsu
from crt_video.errors import ConfigError, DatasetError


def test_labels_are_tsu_classes_and_the_memory_class_follows_the_cue():
    assert [TSU_CLASSES[i] for i in (CUE, PLAIN, AFTER_CUE, FLICKER)] == [
        "Take_pills",
        "Drink.From_cup",
        "Drink.From_glass",
        "Watch_TV",
    ]
    gaps, with_cue = [], 0
    for seed in range(12):
        frames, actions = render_video(np.random.default_rng(seed), 10.0, 360.0)
        actions = np.array(actions)
        assert frames.shape[1:] == (48, 64, 3) and actions[:, 2].max() <= len(frames)
        cues = actions[actions[:, 0] == CUE]
        squares = actions[np.isin(actions[:, 0], [PLAIN, AFTER_CUE])]
        assert len(squares) == SQUARES_PER_VIDEO
        assert (np.diff(squares[:, 1]) > 0).all() and (squares[1:, 1] >= squares[:-1, 2]).all()
        if len(cues):
            with_cue += 1
            assert cues[0, 2] <= 16 * FPS and (squares[:, 0] == AFTER_CUE).all()
            gaps += ((squares[:, 1] - cues[0, 2]) / FPS).tolist()
        else:
            assert (squares[:, 0] == PLAIN).all()
        # the cue is red and the squares blue in the frames they are annotated on
        for label, start, end in actions:
            frame = frames[(start + end) // 2].astype(int)
            if label == CUE:
                assert ((frame[..., 0] > 190) & (frame[..., 2] < 70)).sum() > 100
            if label in (PLAIN, AFTER_CUE):
                assert ((frame[..., 2] > 190) & (frame[..., 0] < 70)).sum() > 200
    assert 3 <= with_cue <= 9
    # one gap per stratum of the log scale: every octave from 10 s to 6 min has events
    counts, _ = np.histogram(gaps, bins=np.geomspace(10.0, 400.0, 6))
    assert min(gaps) >= 10.0 and (counts >= len(gaps) // 10).all()


def test_the_set_is_written_resumably_and_refused_with_other_settings(tmp_path):
    videos, ann = tmp_path / "mp4", tmp_path / "annotations.json"
    settings = dict(type="gap_sweep", seed=3, num_videos=3, max_gap_seconds=20.0)
    paths = make_generated_tsu(videos, ann, tmp_path / "classes.txt", settings)
    assert len(paths) == 3 and all(path.is_file() for path in paths)
    annotated = read_tsu_annotations(ann, len(TSU_CLASSES))
    assert sorted(v.video_id for v in annotated) == sorted(p.stem for p in paths)
    again = json.loads(ann.read_text())
    stamps = [path.stat().st_mtime_ns for path in paths]
    # a rerun keeps the videos and writes the same JSON
    make_generated_tsu(videos, ann, None, settings)
    assert json.loads(ann.read_text()) == again
    assert [path.stat().st_mtime_ns for path in paths] == stamps
    assert (tmp_path / "classes.txt").read_text().splitlines()[CUE] == f"{CUE}\tTake_pills"
    check_generated_tsu(videos, ann, settings)
    with pytest.raises(DatasetError, match="generated with demo settings .* delete"):
        check_generated_tsu(videos, ann, {**settings, "seed": 4})
    with pytest.raises(DatasetError, match="generated with demo settings"):
        check_generated_tsu(videos, ann, {"type": "crossings", "seed": 3, "num_videos": 3})
    with pytest.raises(ConfigError, match="min_gap_seconds < max_gap_seconds"):
        make_generated_tsu(videos, ann, None, dict(type="gap_sweep", max_gap_seconds=5.0))
    with pytest.raises(ConfigError, match="demo.type='gaps' is not one of crossings, gap_sweep"):
        check_generated_tsu(videos, ann, {"type": "gaps"})
