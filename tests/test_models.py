import itertools
import math
from pathlib import Path

import pytest
import torch

from crt_video.config import load_config
from crt_video.errors import ConfigError
from crt_video.models import build_model, list_models
from crt_video.models.crt import memory_may_get_no_gradient
from crt_video.models.streaming import StateRows
from crt_video.models.transformer import apply_rotary, rotary_tables, sinusoidal_positions

IN_DIM, NUM_CLASSES = 12, 5
SMALL = dict(segment_len=4, d_model=16, depth=2, heads=2, dropout=0.0)


def build(type_, **overrides):
    torch.manual_seed(0)
    return (
        build_model({"type": type_, **SMALL, **overrides}, IN_DIM, NUM_CLASSES, frame_rate=4.0)
        .double()
        .eval()
    )


CRT_VARIANTS = [
    dict(memory_cell=cell, memory_read=read, head=head)
    for cell, read, head in itertools.product(
        ("gru", "ncgru"), ("sequence", "token", "mean"), ("memory", "memory+mean")
    )
] + [
    dict(positions="rotary", memory_cell="ncgru"),
    dict(positions="learned", memory_read="token"),
    dict(positions="recurrent", memory_cell="ncgru", position_cell="gru"),
    dict(memory_init="zero", head="memory+mean"),
    dict(head="mean", memory_cell="ncgru"),
    dict(head="mean", memory_read="token", positions="learned"),
    dict(memory_init="zero", memory_read="token"),
]


def test_registry_lists_all_types():
    assert list_models() == ["crt", "full", "gru", "meanpool", "segment", "xl"]


@pytest.mark.parametrize("type_", ["crt", "segment", "full", "meanpool"])
@pytest.mark.parametrize("num_frames", [1, 7, 50])
def test_any_length_gives_one_logit_row_per_clip(type_, num_frames):
    model = build(type_)
    logits = model(
        torch.randn(3, num_frames, IN_DIM, dtype=torch.float64), torch.full((3,), num_frames)
    )
    assert logits.shape == (3, NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "type_,overrides",
    [("crt", v) for v in CRT_VARIANTS]
    + [("segment", {"positions": p}) for p in ("learned", "recurrent", "rotary")]
    + [("full", {"positions": p}) for p in ("sinusoidal", "rotary", "recurrent")]
    + [("meanpool", {})],
)
def test_padding_does_not_change_a_clips_logits(type_, overrides):
    model = build(type_, **overrides)
    torch.manual_seed(1)
    lengths = torch.tensor([3, 9, 22])  # clip 0 is fully padded in segments 1..5 of the batch
    clips = [torch.randn(1, int(n), IN_DIM, dtype=torch.float64) for n in lengths]
    batch = torch.randn(3, 22, IN_DIM, dtype=torch.float64) * 100  # padding values must not matter
    for i, clip in enumerate(clips):
        batch[i, : clip.shape[1]] = clip[0]
    batched = model(batch, lengths)
    for i, clip in enumerate(clips):
        alone = model(clip, lengths[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=1e-10)


@pytest.mark.parametrize("type_", ["crt", "segment", "full"])
def test_fully_padded_segments_keep_gradients_finite(type_):
    model = build(type_)
    model.train()
    features = torch.randn(2, 16, IN_DIM, dtype=torch.float64, requires_grad=True)
    model(features, torch.tensor([2, 16])).sum().backward()
    assert torch.isfinite(features.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("overrides", CRT_VARIANTS)
def test_streaming_segments_equals_batched_forward(overrides):
    model = build("crt", **overrides)
    torch.manual_seed(2)
    lengths = torch.tensor([10, 4, 13])
    features = torch.randn(3, 13, IN_DIM, dtype=torch.float64)
    batched = model(features, lengths)
    for i, n in enumerate(lengths.tolist()):
        state = model.init_state(1)
        # segments of 4 frames, the last one shorter, as a live stream would deliver them
        for segment in features[i : i + 1, :n].split(4, dim=1):
            logits, state = model.step(segment, state)
        torch.testing.assert_close(logits, batched[i : i + 1], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "head,task,fields",
    [
        ("memory", "clip", ("memory",)),
        ("memory+mean", "dense", ("memory",)),  # a frame's head reads no running mean
        ("memory+mean", "clip", ("memory", "output_sum", "num_frames")),
        ("mean", "dense", ("memory",)),
        ("mean", "clip", ("memory", "output_sum", "num_frames")),
    ],
)
def test_the_state_between_segments_holds_only_what_the_head_reads(head, task, fields):
    model = build("crt", head=head, task=task)
    _, state = model.step(torch.randn(2, 4, IN_DIM, dtype=torch.float64), model.init_state(2))
    assert state._fields == fields
    d = SMALL["d_model"]
    assert sum(field[0].numel() for field in state) == (d if len(fields) == 1 else 2 * d + 1)


@pytest.mark.parametrize("head", ["memory", "memory+mean", "mean"])
def test_state_rows_step_some_streams_and_restart_one(head):
    """The home service steps the cameras whose segment is complete: their rows gathered,
    stepped and put back; a camera that reconnects starts again from the first state."""
    model = build("crt", head=head)
    rows = StateRows(model)
    segments = torch.randn(3, 4, IN_DIM, dtype=torch.float64)
    _, state = model.step(segments, model.init_state(3))
    picked = torch.tensor([2, 0])
    _, part = model.step(segments[picked], rows.take(state, picked))
    state = rows.restart(rows.put(state, picked, part), torch.tensor([1]))
    _, twice = model.step(segments, model.step(segments, model.init_state(3))[1])
    for field, stepped, first in zip(state, twice, model.init_state(1), strict=True):
        torch.testing.assert_close(field[picked], stepped[picked])
        torch.testing.assert_close(field[1:2], first)


def test_the_mean_head_reads_the_layer_normed_mean_of_the_frame_outputs_and_no_memory():
    """As xl's 'mean' head does; the memory still reaches the logits through the frames, which
    attend to it."""
    model = build("crt", head="mean")
    assert model.head.in_features == SMALL["d_model"]
    features, lengths = torch.randn(2, 10, IN_DIM, dtype=torch.float64), torch.tensor([10, 6])
    outputs = [
        out.frames for _, _, out in model.scan_segments(features, lengths, model.init_state(2))
    ]
    frames = torch.cat(outputs, dim=1)
    mask = torch.arange(10)[None] < lengths[:, None]
    mean = (frames * mask[..., None]).sum(1) / lengths[:, None]
    expected = model.head(model.norm(mean))
    torch.testing.assert_close(model(features, lengths), expected, rtol=0, atol=1e-12)
    with torch.no_grad():
        model.memory_init.add_(1.0)
    assert not torch.allclose(model(features, lengths), expected)


def test_memory_init_zero_starts_from_zeros_without_a_parameter():
    learned, zero = build("crt"), build("crt", memory_init="zero")
    assert "memory_init" in learned.state_dict() and "memory_init" not in zero.state_dict()
    assert zero.memory_init is None
    assert len(list(learned.parameters())) == len(list(zero.parameters())) + 1
    assert not zero.init_state(3).memory.any()
    assert zero.init_state(3).memory.shape == (3, SMALL["d_model"])
    with pytest.raises(
        ConfigError, match=r"^model.memory_init='random' is not one of learned, zero$"
    ):
        build("crt", memory_init="random")


def test_streaming_float32_with_padded_last_segment():
    model = build_model(
        {"type": "crt", **SMALL, "memory_cell": "ncgru"}, IN_DIM, NUM_CLASSES, frame_rate=4.0
    ).eval()
    features = torch.randn(2, 11, IN_DIM)
    lengths = torch.tensor([11, 6])
    state = model.init_state(2)
    for n, segment in enumerate(features.split(4, dim=1)):
        padded = torch.nn.functional.pad(segment, (0, 0, 0, 4 - segment.shape[1]))
        logits, state = model.step(padded, state, (lengths - 4 * n).clamp(0, segment.shape[1]))
    torch.testing.assert_close(logits, model(features, lengths), rtol=0, atol=1e-4)


def test_truncation_cuts_gradients_to_earlier_segments():
    features = torch.randn(1, 12, IN_DIM, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([12])
    full_bptt = build("crt")
    truncated = build("crt", truncate_every=1)
    torch.testing.assert_close(full_bptt(features, lengths), truncated(features, lengths))
    truncated(features, lengths).sum().backward()
    assert features.grad[0, :8].abs().max() == 0  # only the last segment reaches m_N
    assert features.grad[0, 8:].abs().max() > 0
    features.grad = None
    full_bptt(features, lengths).sum().backward()
    assert features.grad[0, :4].abs().max() > 0


def test_unknown_type_is_rejected_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"'crtt'.*did you mean 'crt'.*crt, full, gru, meanpool, segment, xl"
    ):
        build_model({"type": "crtt"}, IN_DIM, NUM_CLASSES, frame_rate=4.0)


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'d_modle'.*did you mean 'd_model'"):
        build_model({"type": "crt", "d_modle": 64}, IN_DIM, NUM_CLASSES, frame_rate=4.0)


@pytest.mark.parametrize(
    "key,value", [("memory_cell", "lstm"), ("heads", 3), ("truncate_every", 0), ("head", "last")]
)
def test_bad_values_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        build_model({"type": "crt", "d_model": 16, key: value}, IN_DIM, NUM_CLASSES, frame_rate=4.0)


@pytest.mark.parametrize("type_", ["segment", "full", "meanpool"])
def test_one_config_switches_type(type_):
    crt_config = {"type": "crt", **SMALL, "memory_cell": "ncgru", "truncate_every": 2}
    model = build_model({**crt_config, "type": type_}, IN_DIM, NUM_CLASSES, frame_rate=4.0)
    assert model(torch.randn(1, 5, IN_DIM), torch.tensor([5])).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize("type_", ["crt", "xl", "gru", "segment", "full", "meanpool"])
def test_the_base_configs_model_keys_build_every_type(type_):
    """configs/_base_/models/crt.py leaves out the keys whose choices differ by type
    (positions, head): switching model.type needs no other change."""
    base = load_config(Path(__file__).resolve().parents[1] / "configs" / "smarthome_cs.py")
    model = build_model({**base["model"], "type": type_}, IN_DIM, NUM_CLASSES, frame_rate=4.0)
    assert model(torch.randn(1, 5, IN_DIM), torch.tensor([5])).shape == (1, NUM_CLASSES)


ORDER_DIM, ORDER_FRAMES, ORDER_SEGMENT = 16, 128, 16


def order_task(num_clips: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise clips with cue A in the first two segments and cue B in the last two, or the
    reverse; the label is the order, so no single segment and no average can tell."""
    cues = torch.randn(2, ORDER_DIM, generator=torch.Generator().manual_seed(123))
    cues = 1.5 * ORDER_DIM**0.5 * cues / cues.norm(dim=1, keepdim=True)
    features = torch.randn(num_clips, ORDER_FRAMES, ORDER_DIM, generator=generator)
    labels = torch.randint(0, 2, (num_clips,), generator=generator)
    early = torch.randint(0, 2 * ORDER_SEGMENT, (num_clips,), generator=generator)
    late = torch.randint(
        ORDER_FRAMES - 2 * ORDER_SEGMENT, ORDER_FRAMES, (num_clips,), generator=generator
    )
    clips = torch.arange(num_clips)
    features[clips, early] = cues[labels]
    features[clips, late] = cues[1 - labels]
    return features, labels


@pytest.fixture
def one_thread():
    """Tiny models train many times faster on one thread than on a shared, busy pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def order_accuracy(cfg: dict, seed: int = 0, steps: int = 150, batch_size: int = 32) -> float:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    small = dict(segment_len=ORDER_SEGMENT, d_model=32, depth=1, heads=2, dropout=0.0)
    model = build_model({**small, **cfg}, ORDER_DIM, 2, frame_rate=4.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    lengths = torch.full((batch_size,), ORDER_FRAMES)
    for _ in range(steps):
        features, labels = order_task(batch_size, generator)
        loss = torch.nn.functional.cross_entropy(model(features, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, labels = order_task(512, torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        predictions = model.eval()(features, torch.full((512,), ORDER_FRAMES)).argmax(1)
    return (predictions == labels).double().mean().item()


@pytest.mark.parametrize(
    "cfg,learns",
    [
        ({"type": "crt"}, True),
        ({"type": "crt", "memory_cell": "ncgru"}, True),
        ({"type": "crt", "positions": "rotary"}, True),
        ({"type": "crt", "memory_read": "token", "positions": "learned"}, True),
        ({"type": "full"}, True),
        ({"type": "full", "positions": "rotary", "embed_norm": True, "pool": "max"}, True),
        ({"type": "segment"}, False),
        ({"type": "meanpool"}, False),
    ],
    ids=[
        "crt-gru",
        "crt-ncgru",
        "crt-rotary",
        "crt-token-learned",
        "full",
        "full-rotary-max",
        "segment",
        "meanpool",
    ],
)
def test_only_models_that_see_across_segments_learn_the_order_of_distant_events(
    cfg, learns, one_thread
):
    accuracy = order_accuracy(cfg)
    if learns:
        assert accuracy >= (0.95 if cfg["type"] == "crt" else 0.9)
    else:
        assert accuracy <= 0.65


def test_step_rejects_a_segment_longer_than_segment_len():
    model = build("crt")
    with pytest.raises(ValueError, match="segment_len=4"):
        model.step(torch.zeros(1, 5, IN_DIM, dtype=torch.float64), model.init_state(1))


def test_full_reads_a_class_token_and_adds_positions_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    mean_pool = build("full")
    token = build("full", pool="token").float()
    assert token.class_token is not None and mean_pool.class_token is None
    seen = []
    token.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    features, lengths = torch.randn(2, 300, IN_DIM), torch.tensor([300, 120])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = token(features, lengths)
    assert seen[0].dtype == torch.float32 and seen[0].shape[1] == 301  # token + 300 frames
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    # padding frames are masked out: the token reads only the valid ones
    token.eval()
    with torch.no_grad():
        short = token(features[1:, :120], torch.tensor([120]))
        padded = token(features[1:], torch.tensor([120]))
    torch.testing.assert_close(short, padded, atol=1e-4, rtol=1e-4)


def test_update_gate_bias_starts_the_memory_near_keeping_its_state():
    for cell in ("gru", "ncgru"):
        model = build("crt", memory_cell=cell, memory_gate_bias=3.0).eval()
        state = model.init_state(4)
        memory = torch.randn(4, model.memory_init.shape[0], dtype=torch.float64).tanh()
        state = state._replace(memory=memory)
        segment = torch.randn(4, 4, IN_DIM, dtype=torch.float64)
        _, after = model.step(segment, state)
        torch_init = build("crt", memory_cell=cell, memory_gate_bias=None, memory_horizon=None)
        _, plain = torch_init.step(segment, state)
        kept = (after.memory - memory).abs().mean()
        assert kept < 0.5 * (plain.memory - memory).abs().mean()


@pytest.mark.parametrize("type_", ["crt", "gru"])
def test_the_memory_starts_at_one_time_scale_of_56_steps_by_default(type_):
    """One update-gate bias of 4 for every unit: the worst case of the memory benchmark and of the
    clips' gap tables (README, how long the memory holds); no frame rate is needed."""
    cfg = {"type": "crt", **SMALL} if type_ == "crt" else {"type": "gru", "d_model": 16}
    model = build_model(cfg, IN_DIM, NUM_CLASSES)
    bias = model.cell.cell.bias_ih if type_ == "crt" else model.gru.bias_ih_l0
    torch.testing.assert_close(
        update_gate_timescales(bias[16:32].detach()),
        torch.full((16,), 1.0 + math.exp(4.0), dtype=torch.float64),
    )


def update_gate_timescales(bias: torch.Tensor) -> torch.Tensor:
    return 1.0 + bias.double().exp()  # steps over which a unit keeps 1 - 1/e of its state


@pytest.mark.parametrize("cell", ["gru", "ncgru"])
@pytest.mark.parametrize("read", ["sequence", "token"])
def test_memory_horizon_spreads_the_time_scales_from_two_steps_to_the_horizon(cell, read):
    """2 frames/s and a 300 s horizon: 600 steps for a memory RNN stepped per frame, 150 for one
    stepped per segment of 4 frames; every octave between gets as many units."""
    torch.manual_seed(0)
    cfg = {"type": "crt", **SMALL, "memory_cell": cell, "memory_read": read}
    horizon = {"memory_horizon": 300.0, "memory_gate_bias": None}
    model = build_model({**cfg, **horizon}, IN_DIM, NUM_CLASSES, frame_rate=2.0)
    hidden = SMALL["d_model"]
    biases = model.cell.cell.bias_ih if cell == "gru" else model.cell.cell.input.bias
    scales = update_gate_timescales(biases[hidden : 2 * hidden].detach()).sort().values
    longest = 600.0 if read == "sequence" else 150.0
    # unit k sits at quantile (k + 1/2) / d of the log range [2, longest]
    quantiles = torch.tensor([0.5, hidden - 0.5], dtype=torch.float64) / hidden
    torch.testing.assert_close(
        scales[[0, -1]], 2.0 * (longest / 2.0) ** quantiles, rtol=1e-5, atol=0
    )
    steps = scales.log().diff()
    torch.testing.assert_close(
        steps, torch.full_like(steps, steps.mean().item()), rtol=1e-4, atol=1e-5
    )


def test_the_gru_baseline_starts_every_layer_at_the_same_time_scales():
    torch.manual_seed(0)
    cfg = {
        "type": "gru",
        "d_model": 16,
        "depth": 2,
        "memory_horizon": 300.0,
        "memory_gate_bias": None,
    }
    model = build_model(cfg, IN_DIM, NUM_CLASSES, frame_rate=2.0)
    for layer in range(2):
        scales = update_gate_timescales(getattr(model.gru, f"bias_ih_l{layer}")[16:32].detach())
        assert scales.min() < 2.5 and 450.0 < scales.max() < 600.0
        assert not getattr(model.gru, f"bias_hh_l{layer}")[16:32].any()


def test_a_horizon_in_seconds_needs_the_frame_rate_and_a_constant_bias_replaces_it():
    cfg = {"type": "crt", **SMALL, "memory_horizon": 300.0, "memory_gate_bias": None}
    with pytest.raises(ConfigError, match="memory_horizon=300.0 is in seconds.*sampling.fps"):
        build_model(cfg, IN_DIM, NUM_CLASSES)
    for horizon in (300.0, None):  # a bias set in a config wins over the default horizon
        model = build_model(
            {**cfg, "memory_gate_bias": 4.0, "memory_horizon": horizon}, IN_DIM, NUM_CLASSES
        )
        bias = model.cell.cell.bias_ih[SMALL["d_model"] : 2 * SMALL["d_model"]]
        assert (bias == 4.0).all()
    with pytest.raises(ConfigError, match="memory_horizon=-1"):
        build_model({**cfg, "memory_horizon": -1}, IN_DIM, NUM_CLASSES, frame_rate=2.0)


@pytest.mark.parametrize("type_", ["crt", "segment", "full"])
def test_embed_norm_keeps_huge_frames_from_swamping_their_positions(type_):
    """A frame whose standardised features are 1000x the rest still shows where it is."""
    model = build(type_, embed_norm=True, **({"positions": "learned"} if type_ == "crt" else {}))
    features = torch.randn(1, 4, IN_DIM, dtype=torch.float64)
    features[0, 2] *= 1000.0
    if type_ == "full":
        content = model.embed(features) - sinusoidal_positions(4, SMALL["d_model"])
    else:
        content = model.embed(features) - model.embed.pos[:4]
    rms = content.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=1e-3)
    plain = build(type_)
    logits = model(features, torch.tensor([4]))
    assert torch.isfinite(logits).all() and not torch.allclose(
        logits, plain(features, torch.tensor([4]))
    )


def test_rotary_attention_logits_depend_on_the_offset_not_the_place():
    torch.manual_seed(0)
    queries, keys = torch.randn(2, 6, 8, dtype=torch.float64)
    cos, sin = rotary_tables(500, 8, dtype=torch.float64)

    def logits(start: int) -> torch.Tensor:
        tables = (cos[start : start + 6], sin[start : start + 6])
        return apply_rotary(queries, tables) @ apply_rotary(keys, tables).T

    torch.testing.assert_close(logits(0), logits(417))
    # unrotated channels and norms are kept: a rotation, not a rescaling
    torch.testing.assert_close(
        apply_rotary(queries, (cos[:6], sin[:6])).norm(dim=-1), queries.norm(dim=-1)
    )
    assert not torch.allclose(logits(0), queries @ keys.T)


@pytest.mark.parametrize("pool", ["max", "token"])
def test_full_pools_ignore_padding_with_rotary_positions(pool):
    model = build("full", pool=pool, positions="rotary")
    features = torch.randn(1, 30, IN_DIM, dtype=torch.float64)
    with torch.no_grad():
        short = model(features[:, :18], torch.tensor([18]))
        padded = model(features, torch.tensor([18]))
    torch.testing.assert_close(short, padded)


def test_full_rejects_unknown_positions():
    with pytest.raises(
        ConfigError, match="model.positions='learned' is not one of sinusoidal, rotary, recurrent"
    ):
        build("full", positions="learned")


@pytest.mark.parametrize("positions", ["recurrent", "learned", "rotary"])
def test_segment_places_frames_as_crt_does_so_the_two_differ_in_the_memory_only(positions):
    keys = dict(positions=positions, position_dim=8)
    segment, crt = build("segment", **keys), build("crt", **keys)

    # The same position modules, by name and shape: the position RNN, or the learned embedding.
    def placing(model):
        return {
            name: tuple(tensor.shape)
            for name, tensor in model.state_dict().items()
            if name.startswith(("positions.", "embed.pos"))
        }

    assert placing(segment) == placing(crt) and (positions == "rotary") == (not placing(crt))
    assert segment.rotary == crt.rotary == (positions == "rotary")
    # Attention and a mean read alone are blind to the order inside a segment; the positions
    # are not.
    clip = torch.randn(1, 4, IN_DIM, dtype=torch.float64)
    swapped, lengths = clip[:, [1, 0, 2, 3]], torch.tensor([4])
    assert not torch.allclose(segment(clip, lengths), segment(swapped, lengths))


def test_segment_keeps_learned_positions_by_default_and_rejects_others():
    assert build("segment").embed.pos is not None and build("segment").positions is None
    recurrent = build("segment", positions="recurrent", memory_cell="ncgru")
    assert isinstance(recurrent.positions.cell.cell, torch.nn.GRUCell)  # memory_cell is crt's
    with pytest.raises(
        ConfigError, match="model.positions='sinusoidal' is not one of recurrent, learned, rotary"
    ):
        build("segment", positions="sinusoidal")


def test_full_with_recurrent_positions_runs_the_position_rnn_over_the_whole_video():
    model = build("full", positions="recurrent", position_dim=8)
    assert model.positions.cell.hidden_size == 8 and not model.sinusoidal
    features = torch.randn(1, 9, IN_DIM, dtype=torch.float64)
    projected = model.proj(model.norm(features))
    torch.testing.assert_close(model.embed(features), model.positions(projected))
    # one RNN over all nine frames, no restart: the last frame's place depends on the first
    changed = features.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(model.embed(changed)[:, -1], model.embed(features)[:, -1])


# The paper's mechanism (arXiv 2505.00929, section 3), piece by piece.


def test_sequence_read_runs_the_memory_rnn_over_the_segment_outputs_in_order():
    model = build("crt", memory_read="sequence")
    segment = torch.randn(2, 4, IN_DIM, dtype=torch.float64)
    state = model.init_state(2)
    after, outputs = model._step(segment, state, torch.tensor([4, 3]))
    expected = []
    for row, valid in enumerate((4, 3)):
        memory = state.memory[row : row + 1]
        for frame in outputs.frames[row : row + 1, :valid].unbind(1):
            memory = model.cell.cell(frame, memory)
        expected.append(memory)
    torch.testing.assert_close(after.memory, torch.cat(expected))
    torch.testing.assert_close(outputs.hidden[:, -1], after.memory)


def test_last_layer_computes_no_output_at_the_memory_token():
    model = build("crt", memory_read="sequence", depth=2)
    x = torch.randn(2, 5, SMALL["d_model"], dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    skipped = model.encoder(x, mask, skip_first_output=True)
    assert skipped.shape == (2, 4, SMALL["d_model"])
    torch.testing.assert_close(skipped, model.encoder(x, mask)[:, 1:])
    seen = []
    model.encoder.layers[-1].attn.register_forward_hook(lambda m, args, out: seen.append(out))
    model(torch.randn(1, 4, IN_DIM, dtype=torch.float64), torch.tensor([4]))
    assert seen[0].shape[1] == 4  # four frame queries, none for the memory token


def test_recurrent_positions_order_frames_that_attention_alone_cannot():
    """A mean read of attention without positions is blind to the order inside a segment; the
    position RNN is not."""
    segment = torch.randn(1, 4, IN_DIM, dtype=torch.float64)
    swapped = segment[:, [1, 0, 2, 3]]
    lengths = torch.tensor([4])
    recurrent = build("crt", memory_read="mean", positions="recurrent")
    assert not torch.allclose(recurrent(segment, lengths), recurrent(swapped, lengths))
    recurrent.positions = None  # the same model with nothing but attention
    torch.testing.assert_close(recurrent(segment, lengths), recurrent(swapped, lengths))


def test_position_cell_follows_memory_cell_unless_set():
    from crt_video.models.memory_cells import NCGRUCell

    assert isinstance(build("crt", memory_cell="ncgru").positions.cell.cell, NCGRUCell)
    mixed = build("crt", memory_cell="ncgru", position_cell="gru")
    assert isinstance(mixed.positions.cell.cell, torch.nn.GRUCell)
    assert build("crt", positions="learned").positions is None


def test_a_narrow_position_rnn_costs_less_and_still_orders_frames():
    from crt_video.utils.flops import count_flops

    narrow = build("crt", d_model=64, heads=4, position_dim=8)
    full_width = build("crt", d_model=64, heads=4, position_dim=None)
    assert narrow.positions.cell.hidden_size == 8 and full_width.positions.cell.hidden_size == 64
    assert count_flops(narrow, 16, IN_DIM) < count_flops(full_width, 16, IN_DIM)
    segment = torch.randn(1, 4, IN_DIM, dtype=torch.float64)
    lengths = torch.tensor([4])
    assert not torch.allclose(narrow(segment, lengths), narrow(segment[:, [1, 0, 2, 3]], lengths))
    with pytest.raises(ConfigError, match="model.position_dim=0 must be a positive number"):
        build("crt", position_dim=0)


@pytest.mark.parametrize(
    "key,value,choices",
    [
        ("positions", "recurent", "recurrent, learned, rotary"),
        ("memory_read", "seq", "sequence, token, mean"),
        ("position_cell", "lstm", "None, gru, ncgru"),
        ("head", "last", r"memory, memory\+mean, mean"),
    ],
)
def test_misspelt_mechanism_values_name_the_key_and_the_choices(key, value, choices):
    with pytest.raises(ConfigError, match=rf"model.{key}='{value}' is not one of {choices}"):
        build("crt", **{key: value})


def test_a_crt_memory_may_get_no_gradient_when_cut_every_segment_or_a_window_fits_one():
    crt = {"type": "crt", "segment_len": 8}
    assert memory_may_get_no_gradient(crt, 8) and memory_may_get_no_gradient(crt, 4)
    assert not memory_may_get_no_gradient(crt, 16) and not memory_may_get_no_gradient(crt, None)
    assert memory_may_get_no_gradient({**crt, "truncate_every": 1}, 64)
    assert not memory_may_get_no_gradient({**crt, "type": "xl"}, 8)
