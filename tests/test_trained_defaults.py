"""Checkpoints of older versions load and predict as before where a model type's keys changed
since: the defaults they were trained with, and keys a type reads now that a shared config set
for other types then."""

from pathlib import Path

import pytest
import torch

from crt_video.engine.checkpoint import load_model
from crt_video.models.trained_defaults import resolve_trained_defaults

DATA = Path(__file__).parent / "data"
# float32 logits of the same weights differ by ~1e-7 between CPUs; a key resolved wrongly moves
# them by far more, or the weights do not load at all.
SAME_LOGITS = {"rtol": 0, "atol": 1e-5}


@pytest.mark.parametrize("kind", ["segment", "xl"])
def test_baseline_checkpoints_of_crt_video_0_4_0_predict_exactly_as_before(kind):
    """Saved by crt_video 0.4.0 from shared configs, with keys their types did not read then:
    segment's positions='rotary' (it had learned positions), xl's head='memory' (crt's; xl read
    the mean). The xl one has a pair of global biases per layer, which it keeps."""
    expected = torch.load(DATA / "baselines_0.4.0_logits.pt", weights_only=True)
    model, ckpt = load_model(DATA / f"{kind}_0.4.0_clip.pth")
    assert ckpt["crt_video_version"] == "0.4.0"
    if kind == "xl":
        assert ckpt["config"]["model"]["shared_biases"] is False and not model.shared_biases
    with torch.no_grad():
        logits = model(expected["features"], expected["lengths"])
    torch.testing.assert_close(logits, expected[kind], **SAME_LOGITS)


def test_keys_a_type_reads_since_a_version_hold_their_old_meaning_for_older_checkpoints():
    shared = {"type": "segment", "positions": "rotary"}
    assert resolve_trained_defaults(shared, "0.4.0")["positions"] == "learned"
    assert resolve_trained_defaults(shared, "0.5.0") == shared
    old_xl = resolve_trained_defaults({"type": "xl", "head": "memory"}, "0.4.0")
    assert old_xl == {"type": "xl", "head": "mean", "shared_biases": False}
    # crt's changed defaults fill in only what the config leaves out
    named = {"type": "crt", "frame_read": "hidden"}
    assert resolve_trained_defaults(named, "0.3.0") == named
    assert resolve_trained_defaults({"type": "crt"}, "0.3.0")["frame_read"] == "output"


def test_crvit_checkpoints_before_0_6_keep_the_key_value_memory_slot():
    assert resolve_trained_defaults({"type": "crvit"}, "0.5.0")["memory_slot"] == "key_value"
    assert resolve_trained_defaults({"type": "crvit"}, "0.6.0") == {"type": "crvit"}
    named = {"type": "crvit", "memory_slot": "token"}
    assert resolve_trained_defaults(named, "0.5.0") == named
