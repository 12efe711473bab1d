from pathlib import Path

import pytest

from crt_video.data.annotations import (
    COLUMNS,
    annotation_path,
    read_annotations,
    scan_clips,
    write_annotations,
)
from crt_video.data.smarthome import CLASSES_19, CLASSES_31, PROTOCOLS
from crt_video.data.splits import SPLITS
from crt_video.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]
# The public split lists, when a copy sits beside the checkout (they are not shipped).
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "smarthome_reference_splits"
REFERENCE = REFERENCE_DIR if REFERENCE_DIR.is_dir() else None
REFERENCE_FILES = {"train": "train", "val": "validation", "test": "test"}


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


@pytest.mark.skipif(REFERENCE is None, reason="shared reference split lists not available")
def test_reproduces_the_nine_public_lists(tmp_path, logs):
    lists = {
        (protocol, split): (REFERENCE / f"{stem}_{protocol.upper()}.txt").read_text().split()
        for protocol in PROTOCOLS
        for split, stem in REFERENCE_FILES.items()
    }
    video_dir = tmp_path / "clips"
    video_dir.mkdir()
    touch(video_dir, *{name for names in lists.values() for name in names})

    write_annotations(video_dir, tmp_path / "ann")

    for (protocol, split), names in lists.items():
        table = read_annotations(annotation_path(tmp_path / "ann", protocol, split))
        expected = sorted(n for n in names if not n.startswith("Pour.Fromcup"))
        assert list(table["video"]) == expected, (protocol, split)
    fromcup = [r.message for r in logs.records if "Pour.Fromcup" in r.message]
    assert fromcup == ["skipped 14 Pour.Fromcup clips: not one of the 31 Smarthome classes"]


def test_columns_labels_sorting_and_subfolders(tmp_path):
    touch(
        tmp_path / "clips",
        "b/Walk_p03_r01_v16_c06.mp4",
        "Cook.Cut_p03_r00_v02_c03.mp4",
        "Walk_p19_r00_v01_c05.mp4",
        "Leave_p02_r00_v01_c02.mp4",
        "Getup_p04_r00_v01_c01.mp4",
    )
    paths = write_annotations(tmp_path / "clips", tmp_path / "ann")
    assert sorted(p.name for p in paths) == sorted(
        f"smarthome_{p}_{s}.csv" for p in PROTOCOLS for s in SPLITS
    )
    train = read_annotations(annotation_path(tmp_path / "ann", "cs", "train"))
    assert list(train.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert list(train["video"]) == [
        "Cook.Cut_p03_r00_v02_c03.mp4",
        "Getup_p04_r00_v01_c01.mp4",
        "b/Walk_p03_r01_v16_c06.mp4",
    ]
    assert list(train["label_id"]) == [CLASSES_31.index(x) for x in ("Cook.Cut", "Getup", "Walk")]
    assert list(train["camera"]) == [3, 1, 6] and list(train["subject"]) == [3, 4, 3]
    cv1_train = read_annotations(annotation_path(tmp_path / "ann", "cv1", "train"))
    assert list(cv1_train["label_id"]) == [CLASSES_19.index("Getup")]
    cv2_train = read_annotations(annotation_path(tmp_path / "ann", "cv2", "train"))
    assert "Cook.Cut_p03_r00_v02_c03.mp4" not in set(cv2_train["video"])


def test_val_mode_none_writes_an_empty_val_file(tmp_path):
    touch(tmp_path / "clips", "Walk_p03_r01_v16_c06.mp4", "Walk_p19_r00_v01_c05.mp4")
    write_annotations(tmp_path / "clips", tmp_path / "ann", val_mode="subjects")
    write_annotations(tmp_path / "clips", tmp_path / "ann", val_mode="none")
    assert read_annotations(annotation_path(tmp_path / "ann", "cs", "val")).empty
    train = read_annotations(annotation_path(tmp_path / "ann", "cs", "train"))
    assert len(train) == 2


def test_bad_names_are_skipped_by_name(tmp_path, logs):
    touch(
        tmp_path,
        "Walk_p03_r01_v16_c06.mp4",
        "notes.txt",
        ".DS_Store",
        "Walk_p03_r01_v16.mp4",
        "Dance_p03_r01_v16_c06.mp4",
    )
    assert scan_clips(tmp_path) == ["Walk_p03_r01_v16_c06.mp4"]
    text = logs.text
    assert "skipped 2 non-video files: .DS_Store, notes.txt" in text
    assert "Walk_p03_r01_v16.mp4: not a Smarthome clip name" in text
    assert "Dance_p03_r01_v16_c06.mp4: unknown activity 'Dance'" in text
    assert "skipped 2 of 3 video files" in text


@pytest.mark.parametrize(
    "files, message",
    [
        (None, "no such folder"),
        ([], "no video files found"),
        (["readme.txt"], "no video files found"),
        (["clip.mp4", "Dance_p03_r01_v16_c06.mp4"], "none of the 2 video files"),
        (["Walk_p03_r01_v16_c06.mp4", "x/Walk_p03_r01_v16_c06.mp4"], "appears twice"),
    ],
)
def test_unusable_folders_raise(tmp_path, files, message):
    root = tmp_path / "clips"
    if files is not None:
        root.mkdir()
        touch(root, *files)
    with pytest.raises(DatasetError, match=message) as info:
        scan_clips(root)
    assert str(root) in str(info.value)


def test_read_annotations_errors(tmp_path):
    with pytest.raises(DatasetError, match="run tools/make_annotations.py"):
        read_annotations(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("video,label\nx.mp4,Walk\n")
    with pytest.raises(DatasetError, match="missing columns label_id, subject, camera"):
        read_annotations(tmp_path / "bad.csv")


def test_cli_writes_csvs_and_prints_counts(tmp_path, run_tool):
    touch(tmp_path / "clips", "Walk_p03_r01_v16_c06.mp4", "Walk_p02_r00_v01_c02.mp4")
    result = run_tool(
        "tools/make_annotations.py",
        "--video-dir",
        str(tmp_path / "clips"),
        "--out-dir",
        str(tmp_path / "ann"),
        "--protocols",
        "cs",
        "--val-mode",
        "random5",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "cs (val: random5)" in result.stdout and "total" in result.stdout
    assert annotation_path(tmp_path / "ann", "cs", "test").is_file()
    assert not annotation_path(tmp_path / "ann", "cv1", "test").exists()


def test_cli_missing_folder_is_one_line_error(tmp_path, run_tool):
    result = run_tool(
        "tools/make_annotations.py",
        "--video-dir",
        str(tmp_path / "nowhere"),
        "--out-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Walk_p03_r00_v01_c01.mp4,Walk,29,3", "line 3: 4 fields where the header has 5"),
        ("Walk_p03_r00_v01_c01.mp4,Walk,thirty,3,1", "line 3: label_id 'thirty' is not an integer"),
        ("Jump_p03_r00_v01_c01.mp4,Jump,30,3,1", "line 3: unknown class 'Jump'"),
        ("Walk_p03_r00_v01_c01.mp4,Walk,28,3,1", "line 3: label_id 28 does not match 'Walk'"),
    ],
    ids=["missing-field", "not-a-number", "unknown-class", "wrong-label-id"],
)
def test_bad_annotation_row_is_named(tmp_path, row, message):
    path = tmp_path / "smarthome_cs_train.csv"
    path.write_text(f"{','.join(COLUMNS)}\nCook.Cut_p03_r00_v02_c03.mp4,Cook.Cut,2,3,3\n{row}\n")
    with pytest.raises(DatasetError, match=f"smarthome_cs_train.csv, {message}") as error:
        read_annotations(path, CLASSES_31)
    assert "\n" not in str(error.value)


def test_annotation_end_before_start_is_named(tmp_path):
    path = tmp_path / "segments.csv"
    header = ",".join((*COLUMNS, "start", "end"))
    path.write_text(
        f"{header}\nWalk_p03_r00_v01_c01.mp4,Walk,29,3,1,0.0,4.5\n"
        "Walk_p03_r01_v01_c01.mp4,Walk,29,3,1,7.0,2.5\n"
    )
    with pytest.raises(DatasetError, match="segments.csv, line 3: end 2.5 is not after start 7.0"):
        read_annotations(path)
    path.write_text(f"{header}\nWalk_p03_r00_v01_c01.mp4,Walk,29,3,1,0.0,4.5\n")
    table = read_annotations(path)
    assert table.loc[0, "end"] == 4.5 and table["label_id"].tolist() == [29]
