"""TSU names, split rules, annotation JSON validation and per-frame targets."""

import json

import numpy as np
import pytest

from crt_video.data.tsu import (
    TSU_CLASSES,
    TSUVideo,
    frame_targets,
    read_class_file,
    read_tsu_annotations,
    split_of_video,
    split_videos,
)
from crt_video.errors import ClipNameError, DatasetError
from tests.test_annotations import REPO_ROOT

# The public annotation files, when a copy sits beside the checkout (they are not shipped).
TSU_REFERENCE_DIR = REPO_ROOT.parent / "shared" / "tsu_reference"
TSU_REFERENCE = TSU_REFERENCE_DIR if TSU_REFERENCE_DIR.is_dir() else None


@pytest.mark.skipif(TSU_REFERENCE is None, reason="TSU reference annotations not beside checkout")
@pytest.mark.parametrize(
    "protocol, file", [("cs", "smarthome_CS_51.json"), ("cv", "smarthome_CV_51.json")]
)
def test_split_rule_agrees_with_the_public_subsets(protocol, file):
    videos = read_tsu_annotations(TSU_REFERENCE / file, len(TSU_CLASSES))
    splits = split_videos(videos, protocol, val_mode="none")
    assert len(splits["train"]) + len(splits["test"]) == len(videos) == 536
    assert all(v.subset == "training" for v in splits["train"])
    assert all(v.subset == "testing" for v in splits["test"])
    assert len(splits["test"]) == {"cs": 185, "cv": 167}[protocol]


@pytest.mark.skipif(TSU_REFERENCE is None, reason="TSU reference annotations not beside checkout")
def test_builtin_class_list_is_the_action_list():
    assert read_class_file(TSU_REFERENCE / "Action_list") == TSU_CLASSES


def test_validation_holds_out_training_subjects_only():
    assert split_of_video("P19T01C01", "cs") == "val"
    assert split_of_video("P19T01C01", "cs", val_mode="none") == "train"
    assert split_of_video("P02T01C01", "cs") == "test"
    assert split_of_video("P19T01C02", "cv") == "test"  # camera 2 is a test camera
    assert split_of_video("P03T01C04", "cv") == "train"
    with pytest.raises(ClipNameError, match="P<subject>T<take>C<camera>"):
        split_of_video("Walk_p02_r00_v01_c01", "cs")


def test_frame_targets_use_strict_inequalities():
    video = TSUVideo("P02T01C01", "testing", 100.0, np.array([[1, 20, 50], [0, 0, 100]]))
    targets = frame_targets(video, num_frames=10, num_classes=2)
    # frame i sits at time 10 i: class 1 on 30 and 40 (not 20 or 50), class 0 never at time 0
    assert targets[:, 1].nonzero()[0].tolist() == [3, 4]
    assert targets[:, 0].nonzero()[0].tolist() == list(range(1, 10))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"subset": "training", "duration": 10, "actions": [[60, 1, 2]]}, "class index 60"),
        ({"subset": "training", "duration": 10, "actions": [[1, 5, 2]]}, r"ends \(2\) before"),
        ({"subset": "training", "duration": 10, "actions": [[1, 5]]}, "action 0"),
        ({"subset": "training", "duration": -1, "actions": []}, "duration -1"),
        ({"subset": "val", "duration": 10, "actions": []}, "subset 'val'"),
        ({"duration": 10, "actions": []}, "needs 'subset'"),
    ],
)
def test_bad_annotation_entry_is_a_one_line_error_naming_file_and_video(tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"P02T01C01": entry}))
    with pytest.raises(DatasetError, match=message) as err:
        read_tsu_annotations(path, num_classes=51)
    assert str(path) in str(err.value) and "P02T01C01" in str(err.value)
    assert "\n" not in str(err.value)


def test_demo_square_after_disk_needs_the_past_and_lamp_overlaps_crossings():
    from crt_video.data.tsu_demo import DISK, LAMP, SQUARE, SQUARE_AFTER_DISK, render_video

    overlaps, memory_videos = 0, 0
    for seed in range(6):
        frames, actions = render_video(150.0, np.random.default_rng(seed))
        assert len(frames) == 1500 and all(end <= len(frames) for _, _, end in actions)
        disks = [(start, end) for label, start, end in actions if label == DISK]
        assert len(disks) <= 1
        for label, start, end in actions:
            if label == SQUARE_AFTER_DISK:
                assert disks and start >= disks[0][1]
            if label == SQUARE:
                assert not disks or end <= disks[0][0]
        memory_videos += any(label == SQUARE_AFTER_DISK for label, _, _ in actions)
        lamps = [(s, e) for label, s, e in actions if label == LAMP]
        overlaps += sum(
            s < le and ls < e for label, s, e in actions if label != LAMP for ls, le in lamps
        )
    assert memory_videos >= 2 and overlaps >= 3


def test_tsu_demo_made_with_other_settings_is_a_one_line_error(tmp_path):
    from crt_video.run_config import DataConfig
    from crt_video.tasks.dense import resolve_tsu_paths

    demo = dict(seed=0, num_videos=3, min_seconds=30.0, max_seconds=30.0)
    data = DataConfig(
        protocol="cs",
        val_mode="subjects",
        data_root=str(tmp_path / "tsu" / "mp4"),
        ann_file=str(tmp_path / "tsu" / "annotations.json"),
    )
    video_dir, ann_file = resolve_tsu_paths(data, demo)
    assert len(list(video_dir.glob("*.mp4"))) == 3
    assert resolve_tsu_paths(data, demo) == (video_dir, ann_file)  # same settings: reused

    with pytest.raises(DatasetError, match="generated with demo settings") as err:
        resolve_tsu_paths(data, demo | {"seed": 1})
    message = str(err.value)
    assert "'seed': 0" in message and "'seed': 1" in message and data.data_root in message
    assert "\n" not in message
