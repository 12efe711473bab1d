"""Per-frame (dense) CRT and baselines: shapes, online predictions, truncation, cost."""

import pytest
import torch

from crt_video.errors import ConfigError
from crt_video.models import build_model
from crt_video.utils.flops import count_flops

SMALL = dict(task="dense", d_model=16, heads=2, depth=1, segment_len=4)


@pytest.mark.parametrize("kind", ["crt", "segment", "full"])
def test_dense_models_give_one_row_of_class_logits_per_frame(kind):
    model = build_model(dict(SMALL, type=kind), in_dim=8, num_classes=5, frame_rate=4.0).eval()
    logits = model(torch.randn(2, 11, 8), torch.tensor([11, 6]))
    assert logits.shape == (2, 11, 5)
    # A padded frame never changes the valid frames' logits.
    x = torch.randn(1, 6, 8)
    alone = model(x, torch.tensor([6]))
    padded = model(torch.cat([x, torch.randn(1, 5, 8)], 1), torch.tensor([6]))
    torch.testing.assert_close(alone, padded[:, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["crt", "segment", "full", "xl", "gru"])
def test_each_family_is_one_model_with_a_per_frame_head(kind):
    clip = build_model(dict(SMALL, type=kind, task="clip"), in_dim=8, num_classes=5, frame_rate=4.0)
    dense = build_model(dict(SMALL, type=kind), in_dim=8, num_classes=5, frame_rate=4.0)
    assert type(clip) is type(dense) and not clip.per_frame and dense.per_frame
    # the same parameters, so one loop trains either
    shapes = {name: p.shape for name, p in clip.state_dict().items()}
    assert shapes == {name: p.shape for name, p in dense.state_dict().items()}


@torch.no_grad()
def test_dense_full_with_rotary_positions_knows_the_order_of_its_frames():
    model = build_model(dict(SMALL, type="full", positions="rotary"), 8, 3, frame_rate=4.0).eval()
    x = torch.randn(1, 6, 8)
    swapped = x[:, [1, 0, 2, 3, 4, 5]]
    lengths = torch.tensor([6])
    # Without positions attention is order-blind: swapping two frames would only swap their rows.
    assert not torch.allclose(model(x, lengths)[:, 2:], model(swapped, lengths)[:, 2:], atol=1e-4)


FRAME_READS = ["output", "output+memory", "output+hidden", "hidden"]


@pytest.mark.parametrize("frame_read", FRAME_READS)
def test_dense_crt_is_online_and_carries_the_past(frame_read):
    torch.manual_seed(0)
    cfg = dict(SMALL, type="crt", frame_read=frame_read)
    model = build_model(cfg, in_dim=8, num_classes=3, frame_rate=4.0).double().eval()
    x = torch.randn(1, 16, 8, dtype=torch.double)
    logits = model(x, torch.tensor([16]))
    changed_future = x.clone()
    changed_future[:, 8:] += 1.0  # segments 3 and 4
    changed_past = x.clone()
    changed_past[:, :4] += 1.0  # segment 1
    # Segments 1-2 do not see the future; segment 4 sees segment 1 only through the memory.
    torch.testing.assert_close(model(changed_future, torch.tensor([16]))[:, :8], logits[:, :8])
    assert not torch.allclose(model(changed_past, torch.tensor([16]))[:, 12:], logits[:, 12:])


@pytest.mark.parametrize("frame_read", FRAME_READS)
@pytest.mark.parametrize("memory_cell", ["gru", "ncgru"])
def test_dense_crt_streaming_steps_match_the_batched_forward(frame_read, memory_cell):
    cfg = dict(SMALL, type="crt", frame_read=frame_read, memory_cell=memory_cell)
    model = build_model(cfg, in_dim=8, num_classes=3, frame_rate=4.0).double().eval()
    x = torch.randn(1, 10, 8, dtype=torch.double)
    state, rows = model.init_state(1), []
    for segment in x.split(4, dim=1):
        logits, state = model.step(segment, state)
        rows.append(logits)
    torch.testing.assert_close(torch.cat(rows, 1), model(x, torch.tensor([10])), rtol=0, atol=1e-5)


def test_hidden_frame_read_is_the_memory_rnns_state_after_each_frame():
    """'hidden' classifies the memory RNN's state after each frame, the paper's memory read
    frame by frame."""
    torch.manual_seed(0)
    model = (
        build_model(dict(SMALL, type="crt", frame_read="hidden"), 8, 3, frame_rate=4.0)
        .double()
        .eval()
    )
    x = torch.randn(1, 4, 8, dtype=torch.double)
    before, _ = model.step(x, model.init_state(1))
    state = model.init_state(1)
    _, outputs = model._step(x, state, None)
    torch.testing.assert_close(before, model.head(model.norm(outputs.hidden)))


def test_hidden_frame_reads_need_the_sequence_memory():
    with pytest.raises(ConfigError, match="frame_read='output\\+hidden'.*memory_read='sequence'"):
        build_model(
            dict(SMALL, type="crt", frame_read="output+hidden", memory_read="token"),
            8,
            3,
            frame_rate=4.0,
        )


def test_truncation_cuts_gradients_not_values():
    torch.manual_seed(0)
    full = build_model(dict(SMALL, type="crt"), in_dim=8, num_classes=3, frame_rate=4.0)
    cut = build_model(
        dict(SMALL, type="crt", truncate_every=1), in_dim=8, num_classes=3, frame_rate=4.0
    )
    cut.load_state_dict(full.state_dict())
    x = torch.randn(1, 8, 8, requires_grad=True)
    torch.testing.assert_close(cut.eval()(x, torch.tensor([8])), full.eval()(x, torch.tensor([8])))
    cut(x, torch.tensor([8]))[:, 4:].sum().backward()
    assert x.grad[:, :4].abs().sum() == 0 and x.grad[:, 4:].abs().sum() > 0


def test_crt_costs_a_fraction_of_full_on_a_long_video():
    cfg = dict(task="dense", d_model=16, heads=2, depth=1, segment_len=16)
    crt = count_flops(build_model(dict(cfg, type="crt"), 16, 4, frame_rate=4.0), 1024, 16)
    full = count_flops(build_model(dict(cfg, type="full"), 16, 4, frame_rate=4.0), 1024, 16)
    assert crt < 0.25 * full


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="task 'frames'"):
        build_model(dict(type="crt", task="frames"), 8, 3, frame_rate=4.0)
