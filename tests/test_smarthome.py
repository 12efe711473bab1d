import itertools

import pytest

from crt_video.data.smarthome import (
    CLASSES_19,
    CLASSES_31,
    CS_SUBJECTS,
    PROTOCOLS,
    ClipName,
    class_names,
    parse_clip_name,
    split_clips,
    split_of,
)
from crt_video.errors import ClipNameError, ConfigError


def test_class_lists_are_sorted_and_nested():
    assert len(CLASSES_31) == 31 and len(CLASSES_19) == 19
    assert list(CLASSES_31) == sorted(CLASSES_31)
    assert list(CLASSES_19) == sorted(CLASSES_19)
    assert set(CLASSES_19) < set(CLASSES_31)
    assert class_names("cs") == CLASSES_31 and class_names("cv2") == CLASSES_19


def test_parse_clip_name_fields_and_round_trip():
    clip = parse_clip_name("Cook.Cleandishes_p02_r00_v14_c03.mp4")
    assert clip == ClipName("Cook.Cleandishes", subject=2, repetition=0, video=14, camera=3)
    assert clip.stem == "Cook.Cleandishes_p02_r00_v14_c03"
    assert parse_clip_name("sub/dir/" + clip.stem) == clip


@pytest.mark.parametrize(
    "name",
    [
        "Walk_p03_r01_v16.mp4",
        "Walk_p3_r01_v16_c06.mp4",
        "Walk_p03_r01_v16_c06_extra.mp4",
        "Walk-p03-r01-v16-c06.mp4",
        "_p03_r01_v16_c06.mp4",
        "Walk_p03_r01_v16_c06.txt",
    ],
)
def test_malformed_names_raise_naming_the_file(name):
    with pytest.raises(ClipNameError, match="not a Smarthome clip name") as info:
        parse_clip_name(name)
    assert name in str(info.value)


def test_unknown_activity_suggests_the_close_class():
    with pytest.raises(ClipNameError, match="did you mean Walk") as info:
        parse_clip_name("walk_p03_r01_v16_c06.mp4")
    assert "walk_p03_r01_v16_c06.mp4" in str(info.value)
    with pytest.raises(ClipNameError, match="unknown activity 'Dance'"):
        parse_clip_name("Dance_p03_r01_v16_c06.mp4")


def all_generated_names():
    """Every activity (Pour.Fromcup included) x subject 1..25 x camera 1..7."""
    return [
        f"{activity}_p{subject:02d}_r00_v01_c{camera:02d}.mp4"
        for activity, subject, camera in itertools.product(
            CLASSES_31 + ("Pour.Fromcup",), range(1, 26), range(1, 8)
        )
    ]


def test_cross_subject_rule_on_generated_names():
    splits = split_clips(all_generated_names(), "cs")
    for split, members in splits.items():
        for name in members:
            clip = parse_clip_name(name)
            assert clip.subject in CS_SUBJECTS[split] and clip.activity in CLASSES_31
    used = {parse_clip_name(n).subject for names in splits.values() for n in names}
    assert used == set().union(*CS_SUBJECTS.values())
    assert not any("Pour.Fromcup" in n for names in splits.values() for n in names)


@pytest.mark.parametrize("protocol, train_cameras", [("cv1", {1}), ("cv2", {1, 3, 4, 6, 7})])
def test_cross_view_rule_on_generated_names(protocol, train_cameras):
    splits = split_clips(all_generated_names(), protocol)
    expected = {"train": train_cameras, "val": {5}, "test": {2}}
    for split, members in splits.items():
        clips = [parse_clip_name(n) for n in members]
        assert {c.camera for c in clips} == expected[split]
        assert {c.activity for c in clips} == set(CLASSES_19)
        assert len({c.subject for c in clips}) == 25


def test_val_mode_none_and_random5():
    names = all_generated_names()
    by_subjects = split_clips(names, "cs")
    for protocol in PROTOCOLS:
        none = split_clips(names, protocol, val_mode="none")
        assert none["val"] == []
        assert none["test"] == split_clips(names, protocol)["test"]
    none = split_clips(names, "cs", val_mode="none")
    assert sorted(none["train"]) == sorted(by_subjects["train"] + by_subjects["val"])

    pool = sorted(by_subjects["train"] + by_subjects["val"])
    first = split_clips(names, "cs", val_mode="random5", seed=1)
    assert first == split_clips(names, "cs", val_mode="random5", seed=1)
    assert first != split_clips(names, "cs", val_mode="random5", seed=2)
    assert sorted(first["train"] + first["val"]) == pool
    assert len(first["val"]) == round(0.05 * len(pool))
    assert {parse_clip_name(n).subject for n in first["val"]} - CS_SUBJECTS["train"]

    cv = split_clips(names, "cv2", val_mode="random5")
    assert {parse_clip_name(n).camera for n in cv["val"]} <= {1, 3, 4, 6, 7}


def test_random5_keeps_the_views_of_one_event_together():
    names = [
        f"Walk_p03_r{rep:02d}_v01_c{camera:02d}.mp4" for rep in range(40) for camera in (1, 3, 4)
    ]
    splits = split_clips(names, "cv2", val_mode="random5")
    val_events = {parse_clip_name(n).event for n in splits["val"]}
    assert val_events and len(splits["val"]) == 3 * len(val_events)
    assert not val_events & {parse_clip_name(n).event for n in splits["train"]}


def test_split_of_outside_protocol_and_bad_options():
    assert split_of(parse_clip_name("Cook.Cut_p03_r00_v01_c01"), "cv1") is None
    assert split_of(parse_clip_name("Walk_p05_r00_v01_c01"), "cs") is None
    with pytest.raises(ConfigError, match="unknown protocol 'cs3'"):
        class_names("cs3")
    with pytest.raises(ConfigError, match="unknown validation mode"):
        split_clips(["Walk_p03_r00_v01_c01.mp4"], "cs", val_mode="random10")
