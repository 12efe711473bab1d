from pathlib import Path

import numpy as np
import pytest

from crt_video.data.annotations import build_annotations
from crt_video.data.demo import DEMO_CLASSES, make_event_order_dataset
from crt_video.data.smarthome import CLASSES_19, CS_SUBJECTS, PROTOCOLS, parse_clip_name
from crt_video.decode import probe_video, read_frames
from crt_video.errors import ConfigError, DatasetError
from crt_video.tasks.clip import resolve_data_root

DISK_AREA_LIMIT = 2500  # pixels at 160x120: disks stay below, squares above


def event_sequence(path: Path) -> tuple[str, ...]:
    """The kinds of the objects crossing a clip, in order, read back from the decoded pixels."""
    frames = read_frames(path, probe_video(path).fps).frames.numpy().astype(np.int16)
    background = np.median(frames.reshape(-1, 3), axis=0)  # most of every frame is background
    areas = (np.abs(frames - background).max(axis=-1) > 60).sum(axis=(1, 2))
    kinds, previous = [], 0
    for area in areas:
        if area and not previous:
            kinds.append([])
        if area:
            kinds[-1].append(area)
        previous = area
    return tuple("disk" if np.median(k) < DISK_AREA_LIMIT else "square" for k in kinds)


def test_every_split_of_every_protocol_has_every_class(demo_videos):
    names = [path.name for path in demo_videos]
    assert {parse_clip_name(n).activity for n in names} == set(DEMO_CLASSES) <= set(CLASSES_19)
    for protocol in PROTOCOLS:
        for split, table in build_annotations(names, protocol).items():
            assert set(table["label"]) == set(DEMO_CLASSES), (protocol, split)


def test_class_is_the_order_of_the_moving_objects(demo_videos):
    for path in demo_videos:
        assert event_sequence(path) == DEMO_CLASSES[parse_clip_name(path.name).activity], path


def test_clip_lengths_vary_within_bounds(demo_videos):
    durations = [probe_video(path).duration for path in demo_videos]
    assert min(durations) >= 1.9 and max(durations) <= 4.1
    assert max(durations) - min(durations) > 0.5


def test_names_cover_all_cameras_and_subject_groups(tmp_path):
    paths = make_event_order_dataset(tmp_path, num_clips=28, min_seconds=0.5, max_seconds=0.5)
    clips = [parse_clip_name(path.name) for path in paths]
    assert len(set(paths)) == 28 and all(path.is_file() for path in paths)
    assert {clip.camera for clip in clips} == set(range(1, 8))
    for subjects in CS_SUBJECTS.values():
        assert len({clip.subject for clip in clips} & subjects) >= 2


def test_deterministic_per_seed(tmp_path):
    def generate(folder, seed):
        paths = make_event_order_dataset(
            tmp_path / folder, seed=seed, num_clips=4, min_seconds=1.0, max_seconds=3.0
        )
        return [p.name for p in paths], [read_frames(p, 5.0).frames.numpy() for p in paths]

    names, frames = generate("a", 0)
    again_names, again_frames = generate("b", 0)
    other_names, other_frames = generate("c", 1)
    assert names == again_names
    assert all(np.array_equal(x, y) for x, y in zip(frames, again_frames, strict=True))
    assert [f.shape for f in frames] != [f.shape for f in other_frames]


def test_bad_generator_arguments(tmp_path):
    with pytest.raises(ConfigError, match="Cook.Cut"):
        make_event_order_dataset(tmp_path, classes={"Cook.Cut": ("disk",)})
    with pytest.raises(ConfigError, match="min_seconds"):
        make_event_order_dataset(tmp_path, min_seconds=5.0, max_seconds=2.0)


def test_cli(tmp_path, run_tool):
    command = ["tools/make_demo_data.py", "--out", str(tmp_path / "demo")]
    result = run_tool(*command, "--num-clips", "8", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert "8 clips" in result.stdout and "cs: train" in result.stdout
    assert len(list((tmp_path / "demo").glob("*.mp4"))) == 8
    result = run_tool(*command, "--num-clips", "0")
    assert result.returncode == 2 and result.stderr.startswith("error: num_clips")


def test_clip_demo_made_with_other_settings_is_a_one_line_error(tmp_path):
    data_root = str(tmp_path / "demo")
    root = resolve_data_root(data_root, {"seed": 0, "num_clips": 4})
    assert len(list(root.glob("*.mp4"))) == 4
    other = {"seed": 0, "num_clips": 5}
    with pytest.raises(DatasetError, match="generated with demo settings") as err:
        resolve_data_root(data_root, other)
    assert "'num_clips': 4" in str(err.value) and "'num_clips': 5" in str(err.value)
    assert "\n" not in str(err.value)

    (root / "demo.json").unlink()  # a set generated before settings were recorded
    assert resolve_data_root(data_root, other) == root
