"""Transformer-XL and GRU baselines: CRT's contract (streaming = batched, padding-free), XL's
stop-gradient cache and relative positions, cost."""

import pytest
import torch

from crt_video.engine.feature_stream import FeatureChunk
from crt_video.engine.segment_runner import SegmentRunner
from crt_video.errors import ConfigError
from crt_video.models import build_model
from crt_video.models.streaming import StreamingModel
from crt_video.models.transformer import sinusoidal_positions
from crt_video.models.xl import offset_encodings, relative_positions
from crt_video.utils.flops import count_flops

IN_DIM, NUM_CLASSES, S = 12, 5, 4
SMALL = dict(segment_len=S, d_model=16, depth=2, heads=2, dropout=0.0)
KINDS = [(t, task) for t in ("xl", "gru") for task in ("clip", "dense")]


def build(type_: str, task: str = "clip", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {"type": type_, "task": task, **SMALL, **overrides}
    return build_model(cfg, IN_DIM, NUM_CLASSES, frame_rate=4.0).double().eval()


@pytest.mark.parametrize("type_", ["crt", "xl", "gru", "segment", "full", "meanpool"])
def test_the_recurrent_models_implement_the_streaming_step(type_):
    streams = type_ in ("crt", "xl", "gru")
    model = build_model({"type": type_, **SMALL}, IN_DIM, NUM_CLASSES, frame_rate=4.0)
    assert isinstance(model, StreamingModel) == streams
    assert SegmentRunner(model, S).streaming == streams


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, IN_DIM, dtype=torch.float64)


@pytest.mark.parametrize("type_,task", KINDS)
@pytest.mark.parametrize("num_frames", [1, 7, 13])
def test_shapes_and_finite_logits(type_, task, num_frames):
    model = build(type_, task)
    logits = model(randn(3, num_frames), torch.tensor([num_frames, 1, 0]))
    shape = (3, NUM_CLASSES) if task == "clip" else (3, num_frames, NUM_CLASSES)
    assert logits.shape == shape and torch.isfinite(logits).all()


@pytest.mark.parametrize("type_,task", KINDS)
def test_streaming_steps_equal_the_batched_forward(type_, task):
    model = build(type_, task)
    torch.manual_seed(2)
    lengths, features = torch.tensor([10, 4, 13]), randn(3, 13)
    batched = model(features, lengths)
    for i, n in enumerate(lengths.tolist()):
        state, rows = model.init_state(1), []
        # segments of S frames, the last one shorter, as a live stream delivers them
        for segment in features[i : i + 1, :n].split(S, dim=1):
            logits, state = model.step(segment, state)
            rows.append(logits)
        streamed = logits if task == "clip" else torch.cat(rows, dim=1)
        expected = batched[i : i + 1] if task == "clip" else batched[i : i + 1, :n]
        torch.testing.assert_close(streamed, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("type_", ["xl", "gru"])
def test_labeler_windows_restart_from_a_fresh_state(type_):
    """The labeler steps the whole stream and the current window as one batch of two; in these
    states the batch is not the first dimension of every field."""
    model = build(type_)
    features = randn(1, 13)[0]
    chunks = (FeatureChunk(piece) for piece in features.split(3))
    logits, windows = SegmentRunner(model, S).clip(chunks, window_frames=2 * S, rate=4.0)
    torch.testing.assert_close(logits, model(features[None], torch.tensor([13]))[0])
    assert len(windows) == 2
    for window, piece in zip(windows, features.split(2 * S), strict=True):
        alone = model(piece[None], torch.tensor([len(piece)]))[0]
        torch.testing.assert_close(window, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("type_,task", KINDS)
def test_padded_last_segment_streams_like_the_forward(type_, task):
    model = build(type_, task)
    features, lengths = randn(2, 11), torch.tensor([11, 6])
    state, rows = model.init_state(2), []
    for n, segment in enumerate(features.split(S, dim=1)):
        padded = torch.nn.functional.pad(segment, (0, 0, 0, S - segment.shape[1]))
        logits, state = model.step(padded, state, (lengths - S * n).clamp(0, segment.shape[1]))
        rows.append(logits[:, : segment.shape[1]])
    streamed = logits if task == "clip" else torch.cat(rows, dim=1)
    expected = model(features, lengths)
    if task == "dense":  # padded frames' logits are unspecified
        streamed, expected = streamed[1, :6], expected[1, :6]
    torch.testing.assert_close(streamed, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("type_,task", KINDS)
def test_padding_does_not_change_a_clips_logits(type_, task):
    model = build(type_, task)
    torch.manual_seed(1)
    lengths = torch.tensor([3, 9, 22, 0])  # clip 0 is fully padded in segments 1..5
    clips = [randn(1, int(n)) for n in lengths[:3]]
    batch = randn(4, 22) * 100  # padding values must not matter
    for i, clip in enumerate(clips):
        batch[i, : clip.shape[1]] = clip[0]
    batched = model(batch, lengths)
    assert torch.isfinite(batched).all()
    for i, clip in enumerate(clips):
        alone = model(clip, lengths[i : i + 1])
        if task == "dense":
            alone, expected = alone[0], batched[i, : clip.shape[1]]
        else:
            expected = batched[i : i + 1]
        torch.testing.assert_close(expected, alone, rtol=0, atol=1e-10)


@pytest.mark.parametrize("type_", ["xl", "gru"])
def test_a_fully_padded_segment_leaves_the_state_unchanged(type_):
    model = build(type_)
    _, state = model.step(randn(2, S), model.init_state(2))
    _, after = model.step(randn(2, S) * 100, state, torch.tensor([0, S]))
    for name, before, now in zip(state._fields, state, after, strict=True):
        batch_dim = 1 if name in ("cache", "hidden") else 0  # after the layer dimension
        assert torch.equal(before.select(batch_dim, 0), now.select(batch_dim, 0)), name
        if name != "cache_mask":  # the other row moved on (its mask stays all valid)
            assert not torch.equal(before.select(batch_dim, 1), now.select(batch_dim, 1)), name


@pytest.mark.parametrize("type_,task", KINDS)
def test_fully_padded_segments_keep_gradients_finite(type_, task):
    model = build(type_, task, dropout=0.1).train()
    features = randn(2, 16).requires_grad_()
    model(features, torch.tensor([2, 16])).sum().backward()
    assert torch.isfinite(features.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_an_empty_gru_clip_reads_the_initial_state():
    model = build("gru")
    empty = model(randn(1, 5), torch.tensor([0]))
    torch.testing.assert_close(empty, model.head(model.norm(model.init_state(1).hidden[-1])))


def test_xl_cache_carries_values_but_no_gradient_to_the_previous_segment():
    model = build("xl", "dense")
    features = randn(1, 2 * S).requires_grad_()
    logits = model(features, torch.tensor([2 * S]))
    changed = features.detach().clone()
    changed[:, :S] += 1.0
    # The second segment sees the first through the cache...
    assert not torch.allclose(model(changed, torch.tensor([2 * S]))[:, S:], logits[:, S:])
    # ...but, as in XL, no gradient flows back into it.
    logits[:, S:].sum().backward()
    assert features.grad[:, :S].abs().max() == 0 and features.grad[:, S:].abs().max() > 0


def test_xl_never_attends_to_the_empty_cache_of_the_first_segment():
    model = build("xl", "dense")
    segment, empty = randn(1, S), model.init_state(1)
    garbage = empty._replace(cache=torch.randn_like(empty.cache) * 100)
    torch.testing.assert_close(model.step(segment, garbage)[0], model.step(segment, empty)[0])


@pytest.mark.parametrize("type_", ["xl", "gru"])
def test_dense_models_are_online_up_to_their_own_segment(type_):
    model = build(type_, "dense")
    features = randn(1, 4 * S)
    logits = model(features, torch.tensor([4 * S]))
    changed = features.clone()
    changed[:, 2 * S :] += 1.0
    torch.testing.assert_close(
        model(changed, torch.tensor([4 * S]))[:, : 2 * S], logits[:, : 2 * S]
    )


def test_xl_relative_encodings_and_offsets():
    offsets = torch.arange(20)
    torch.testing.assert_close(
        offset_encodings(offsets, 16, torch.float64),
        sinusoidal_positions(20, 16, dtype=torch.float64),
    )
    # sin is odd, cos even: a frame before and one after are told apart
    table = offset_encodings(torch.tensor([-3, 3]), 16, torch.float64)
    torch.testing.assert_close(table[0, 0::2], -table[1, 0::2])
    torch.testing.assert_close(table[0, 1::2], table[1, 1::2])
    encodings, index = relative_positions(S, S, 16, torch.device("cpu"), torch.float64)
    assert index.shape == (S, 2 * S) and len(encodings) == 3 * S - 1
    assert index.min() == 0 and index.max() == len(encodings) - 1
    # query i, key j (cache at -S..-1): offset i - j; index 0 is offset -(S-1)
    assert index[0, S + S - 1] == 0 and index[S - 1, 0] == 3 * S - 2


def test_xl_attention_sees_where_frames_are_and_its_biases_learn():
    model = build("xl", "dense", depth=1)
    segment = randn(1, S)
    logits = model(segment, torch.tensor([S]))
    flipped = model(segment.flip(1), torch.tensor([S])).flip(1)
    # No position embedding is added: only the relative term breaks permutation symmetry.
    assert not torch.allclose(logits, flipped)
    model.train()
    model(randn(2, 3 * S), torch.tensor([3 * S, 5])).sum().backward()
    for bias in (model.content_bias, model.position_bias):
        assert bias.grad is not None and bias.grad.abs().max() > 0


def test_xl_layers_share_one_pair_of_global_biases_or_hold_their_own():
    shared, per_layer = build("xl", depth=3), build("xl", depth=3, shared_biases=False)
    d = SMALL["d_model"]

    def count(model):
        return sum(p.numel() for p in model.parameters())

    # u and v are [heads, d_model / heads] each: 2 d values per pair
    assert count(per_layer) - count(shared) == (3 - 1) * 2 * d
    biases = ("content_bias", "position_bias")
    assert {k for k in shared.state_dict() if k.endswith(biases)} == set(biases)
    assert "layers.2.attn.position_bias" in per_layer.state_dict()
    features, lengths = randn(1, 2 * S), torch.tensor([2 * S])
    for model, bias in (
        (shared, shared.content_bias),
        (per_layer, per_layer.layers[2].attn.content_bias),
    ):
        before = model(features, lengths)
        with torch.no_grad():
            bias.add_(1.0)
        assert not torch.allclose(model(features, lengths), before)


def test_xl_step_rejects_a_segment_longer_than_segment_len():
    for task in ("clip", "dense"):
        model = build("xl", task)
        with pytest.raises(ValueError, match=f"segment_len={S}"):
            model.step(randn(1, S + 1), model.init_state(1))


def test_gru_steps_take_any_number_of_frames():
    model = build("gru")
    features = randn(1, 9)
    state = model.init_state(1)
    for segment in features.split([1, 5, 3], dim=1):
        logits, state = model.step(segment, state)
    torch.testing.assert_close(logits, model(features, torch.tensor([9])), rtol=0, atol=1e-10)


def test_flops_are_counted_and_xl_costs_more_than_the_segment_transformer():
    width = dict(d_model=32, depth=1, heads=2, segment_len=16, dropout=0.0)
    types = ("segment", "xl", "gru")
    flops = {
        t: count_flops(build_model(dict(width, type=t), 16, 4, frame_rate=4.0), 256, 16)
        for t in types
    }
    assert all(value > 0 for value in flops.values())
    assert flops["xl"] > flops["segment"]
    # a GRU layer: 6 d x d matrices per frame, plus the projection
    assert flops["gru"] == pytest.approx(256 * 2 * (16 * 32 + 6 * 32 * 32), rel=0.01)


def test_misspelt_type_suggests_xl():
    with pytest.raises(ConfigError, match=r"'xll'.*did you mean 'xl'"):
        build_model({"type": "xll"}, IN_DIM, NUM_CLASSES, frame_rate=4.0)


@pytest.mark.parametrize(
    "type_,key,value",
    [("gru", "depth", 0), ("gru", "d_model", -1), ("gru", "dropout", 1.0), ("xl", "heads", 3)],
)
def test_bad_values_are_rejected(type_, key, value):
    with pytest.raises(ConfigError, match=key):
        build_model({"type": type_, "d_model": 16, key: value}, IN_DIM, NUM_CLASSES, frame_rate=4.0)


@pytest.mark.parametrize("type_", ["xl", "gru"])
def test_one_config_switches_type(type_):
    crt_config = {"type": "crt", **SMALL, "memory_cell": "ncgru", "positions": "rotary"}
    model = build_model({**crt_config, "type": type_}, IN_DIM, NUM_CLASSES, frame_rate=4.0)
    assert model(torch.randn(1, 5, IN_DIM), torch.tensor([5])).shape == (1, NUM_CLASSES)


def xl_frame_outputs(model: torch.nn.Module, features: torch.Tensor, lengths: torch.Tensor):
    """The final-layer outputs [B, T, d] of every frame of a clip, segment by segment."""
    state, outputs = model.init_state(len(features)), []
    for n, segment in enumerate(features.split(S, dim=1)):
        out, state = model._advance(segment, state, (lengths - n * S).clamp(0, segment.shape[1]))
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def test_xl_heads_read_the_mean_of_the_frame_outputs_or_the_last_valid_ones():
    mean, last = build("xl"), build("xl", head="last")
    features, lengths = randn(2, 10), torch.tensor([10, 6])
    outputs = xl_frame_outputs(mean, features, lengths)
    valid = torch.arange(10)[None] < lengths[:, None]
    averaged = (outputs * valid[..., None]).sum(1) / lengths[:, None]
    expected = mean.head(mean.norm(averaged))
    torch.testing.assert_close(mean(features, lengths), expected, rtol=0, atol=1e-12)
    final = outputs[torch.arange(2), lengths - 1]
    torch.testing.assert_close(
        last(features, lengths), last.head(last.norm(final)), rtol=0, atol=1e-12
    )
    assert not torch.allclose(last(features, lengths), expected)


@pytest.mark.parametrize(
    "head,task,fields",
    [
        ("mean", "clip", ("cache", "cache_mask", "output_sum", "num_frames")),
        ("last", "clip", ("cache", "cache_mask", "last_output")),
        ("last", "dense", ("cache", "cache_mask")),  # a frame's head reads its own output
    ],
)
def test_xl_state_holds_the_cache_and_only_what_the_head_reads(head, task, fields):
    model = build("xl", task, head=head)
    assert model.init_state(2)._fields == fields


def test_xl_last_head_streams_like_the_forward_and_ignores_padding():
    model = build("xl", head="last")
    features, lengths = randn(3, 11), torch.tensor([11, 6, 0])
    batched = model(features, lengths)
    state = model.init_state(3)
    for n, segment in enumerate(features.split(S, dim=1)):
        padded = torch.nn.functional.pad(segment, (0, 0, 0, S - segment.shape[1]))
        logits, state = model.step(padded, state, (lengths - S * n).clamp(0, segment.shape[1]))
    torch.testing.assert_close(logits, batched, rtol=0, atol=1e-10)
    alone = model(features[1:2, :6], lengths[1:2])
    torch.testing.assert_close(batched[1:2], alone, rtol=0, atol=1e-10)
    assert torch.equal(state.last_output[2], torch.zeros(16))  # a clip with no frame read none


def test_xl_rejects_a_head_it_has_not_and_biases_that_are_not_a_flag():
    with pytest.raises(ConfigError, match="model.head='memory' is not one of mean, last"):
        build("xl", head="memory")
    with pytest.raises(ConfigError, match="model.shared_biases='no' must be True or False"):
        build("xl", shared_biases="no")
