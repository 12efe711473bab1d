"""Causal crt, xl and segment: a frame's output never depends on a later frame, and a causal crt
streamed one frame at a time gives the batched forward's logits at every frame."""

import pytest
import torch

from crt_video.errors import ConfigError
from crt_video.models import build_model
from crt_video.models.crt_frames import CRTFrameStepper

SMALL = dict(task="dense", d_model=16, heads=2, depth=2, segment_len=4, dropout=0.0, causal=True)
GATE = dict(memory_horizon=60.0, memory_gate_bias=None)


def causal_model(kind: str, **keys) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(SMALL, type=kind, **(GATE if kind == "crt" else {}), **keys)
    return build_model(cfg, 8, 5, frame_rate=2.0).double().eval()


CRT_VARIANTS = [
    dict(frame_read=read, positions=positions, memory_cell=cell)
    for read, positions, cell in [
        ("output", "recurrent", "gru"),
        ("output+hidden", "recurrent", "ncgru"),
        ("hidden", "learned", "gru"),
        ("output+memory", "rotary", "gru"),
        ("output+hidden", "recurrent", "gru"),
    ]
] + [dict(frame_read="output+memory", positions="rotary", memory_init="zero")]


@pytest.mark.parametrize(
    "kind, keys",
    [("crt", keys) for keys in CRT_VARIANTS]
    + [("xl", {})]
    + [("segment", {"positions": p}) for p in ("learned", "recurrent", "rotary")],
)
@torch.no_grad()
def test_every_output_before_a_perturbed_frame_is_unchanged_exactly(kind, keys):
    model = causal_model(kind, **keys)
    x, lengths = torch.randn(2, 13, 8, dtype=torch.float64), torch.tensor([13, 10])
    logits = model(x, lengths)
    for j in (0, 3, 4, 6, 12):
        changed = x.clone()
        changed[:, j] += 1.0
        after = model(changed, lengths)
        assert torch.equal(after[:, :j], logits[:, :j]), j
        assert not torch.equal(after[0, j], logits[0, j])  # the frame itself does change
    assert model.latency == "frame"
    plain = build_model(dict(SMALL, type=kind, causal=False, **keys), 8, 5, frame_rate=2.0)
    assert plain.latency == "segment"


@pytest.mark.parametrize("keys", CRT_VARIANTS)
@torch.no_grad()
def test_frame_steps_give_the_batched_forwards_logits(keys):
    """Three rows, each starting at its own step (so at its own place in its segments), ending
    at its own length: one frame per row and step, rows without a frame left as they were."""
    model = causal_model("crt", **keys)
    x = torch.randn(3, 11, 8, dtype=torch.float64)
    lengths, starts = torch.tensor([11, 7, 9]), torch.tensor([0, 2, 5])
    expected = model(x, lengths)
    stepper = CRTFrameStepper(model)
    state, got = stepper.init_state(3), torch.zeros_like(expected)
    for tick in range(int((starts + lengths).max())):
        index = (tick - starts).clamp(0, 10)
        active = (tick >= starts) & (tick - starts < lengths)
        logits, state = stepper.step(x[torch.arange(3), index], state, active)
        got[active, index[active]] = logits[active]
    valid = torch.arange(11)[None] < lengths[:, None]
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=0)
    # between segments the state is the memory alone: row 0 ends on a segment boundary + 3
    assert state.filled.tolist() == [11 % 4, 7 % 4, 9 % 4]


@torch.no_grad()
def test_padding_changes_nothing_and_causal_needs_the_sequence_memory():
    model = causal_model("crt", frame_read="output+hidden")
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    padded = torch.cat([x, torch.randn(1, 7, 8, dtype=torch.float64)], 1)
    torch.testing.assert_close(
        model(padded, torch.tensor([6]))[:, :6], model(x, torch.tensor([6])), atol=1e-12, rtol=0
    )
    with pytest.raises(ConfigError, match="causal=True needs model.memory_read='sequence'"):
        build_model(dict(SMALL, type="crt", memory_read="token", frame_read="output"), 8, 5)
    with pytest.raises(ConfigError, match="model.causal='yes' must be True or False"):
        build_model(dict(SMALL, type="segment", causal="yes"), 8, 5)
    with pytest.raises(ValueError, match="causal CRT with per-frame logits"):
        CRTFrameStepper(causal_model("crt", causal=False))
