"""A small seeded corpus of damaged videos: every file ends in a result or one clean error line."""

from __future__ import annotations

import hashlib

import pytest

from benchmarks.fuzz import (
    ENCODER,
    MODEL,
    SAMPLING_FPS,
    make_corpus,
    run_extract,
    run_infer,
)
from benchmarks.stream import write_checkpoint

ALWAYS_LABELLED = {"valid", "wrong-extension"}
ALWAYS_REFUSED = {"empty", "not-a-video", "audio-only", "unknown-codec"}


def digests(files) -> dict[str, str]:
    return {f.path.name: hashlib.sha256(f.path.read_bytes()).hexdigest() for f in files}


def test_corpus_is_seeded(tmp_path):
    first = make_corpus(tmp_path / "a", seed=3, num_files=20)
    assert digests(first) == digests(make_corpus(tmp_path / "b", seed=3, num_files=20))
    assert digests(first) != digests(make_corpus(tmp_path / "c", seed=4, num_files=20))


@pytest.mark.slow
def test_every_damaged_file_ends_in_a_result_or_one_error_line(tmp_path):
    corpus = tmp_path / "corpus"
    files = make_corpus(corpus, seed=1, num_files=30)
    assert {f.kind for f in files} == {
        *ALWAYS_LABELLED, *ALWAYS_REFUSED, "truncated", "header", "payload", "huge-size"
    }  # fmt: skip
    checkpoint = write_checkpoint(tmp_path / "random.pth", ENCODER, SAMPLING_FPS, MODEL)

    outcomes = run_infer(files, checkpoint) + run_extract(files, corpus)

    assert [vars(o) for o in outcomes if o.result not in ("labelled", "refused")] == []
    assert len(outcomes) == 2 * len(files)
    for outcome in outcomes:
        if outcome.kind in ALWAYS_LABELLED:
            assert outcome.result == "labelled", vars(outcome)
        if outcome.kind in ALWAYS_REFUSED:
            assert outcome.result == "refused", vars(outcome)
        if outcome.result == "refused":
            assert outcome.path in outcome.detail and "\n" not in outcome.detail
