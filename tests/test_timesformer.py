import dataclasses
import itertools

import pytest
import torch

from crt_video.errors import ConfigError
from crt_video.models import crvit, timesformer
from crt_video.models.crvit import CRViT
from crt_video.models.timesformer import TimeSformer, TimeSformerConfig

# 2x2 patches per frame; a pixel block of PATCH x PATCH at (row, col) * PATCH is one patch.
PATCH = 16


def tiny(**overrides) -> TimeSformerConfig:
    keys = dict(img_size=32, patch_size=PATCH, num_frames=8, embed_dim=64, depth=2, num_heads=2)
    return TimeSformerConfig(**{**keys, "drop_path_rate": 0.0, **overrides})


def model(cls, **overrides):
    torch.manual_seed(0)
    net = cls(3, 5, tiny(**overrides)).eval()
    # Every block's temporal_fc starts at zero (the official init): give the time path weight.
    with torch.no_grad():
        for block in net.blocks:
            block.temporal_fc.weight.normal_(std=0.1)
    return net


def video(batch: int = 2, frames: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def changed(clip: torch.Tensor, frames, patch: tuple[int, int] | None = None) -> torch.Tensor:
    """A copy of clip with new pixels in ``frames`` (only in one patch if given)."""
    clip = clip.clone()
    rows = cols = slice(None)
    if patch is not None:
        rows = slice(patch[0] * PATCH, (patch[0] + 1) * PATCH)
        cols = slice(patch[1] * PATCH, (patch[1] + 1) * PATCH)
    clip[:, frames, :, rows, cols] += 1.0
    return clip


def record(module: torch.nn.Module, store: list, inputs: bool = False):
    """Hook that appends the module's first input (or its output) at each call."""
    if inputs:
        return module.register_forward_pre_hook(lambda _, args: store.append(args[0].detach()))
    return module.register_forward_hook(lambda _, args, out: store.append(out.detach()))


def test_timesformer_gives_logits_per_clip():
    net = model(TimeSformer)
    assert net(video()).shape == (2, 5)
    assert net.forward_features(video()).shape == (2, 64)


def test_timesformer_rejects_a_video_of_another_length():
    with pytest.raises(ValueError, match="num_frames"):
        model(TimeSformer)(video(frames=4))


@pytest.mark.parametrize("frame", [0, 7])
def test_timesformer_output_depends_on_every_frame(frame):
    net, clip = model(TimeSformer), video()
    with torch.no_grad():
        assert not torch.allclose(net(clip), net(changed(clip, [frame])))


def test_time_attention_mixes_the_frames_of_one_spatial_position_only():
    net, clip = model(TimeSformer), video(batch=1)
    outputs = []
    record(net.blocks[0].temporal_attn, outputs)  # rows: the 4 spatial positions, 8 frames each
    with torch.no_grad():
        net(clip)
        net(changed(clip, [7], patch=(0, 1)))  # last frame, spatial position 1 only
    before, after = outputs
    differs = (before - after).abs().amax(-1) > 1e-6  # [positions, frames]
    assert differs[1].all()  # every frame at that position saw the change
    assert not differs[[0, 2, 3]].any()


def test_space_attention_mixes_the_patches_of_one_frame_only():
    net, clip = model(TimeSformer), video(batch=1)
    with torch.no_grad():  # block 0's time attention then carries nothing across frames
        net.blocks[0].temporal_fc.weight.zero_()
    outputs = []
    record(net.blocks[0].attn, outputs)  # rows: the 8 frames, 1 class + 4 patch tokens each
    with torch.no_grad():
        net(clip)
        net(changed(clip, [2], patch=(1, 0)))
    before, after = outputs
    differs = (before - after).abs().amax(-1) > 1e-6  # [frames, tokens]
    assert differs[2].all()  # the class token and every patch of frame 2
    assert not differs[[0, 1, 3, 4, 5, 6, 7]].any()


def test_crvit_first_iteration_sees_only_the_first_chunk():
    net, clip = model(CRViT), video()
    with torch.no_grad():
        before, _ = net.forward_iterations(clip)
        after, _ = net.forward_iterations(changed(clip, [4, 5, 6, 7]))
    torch.testing.assert_close(before[0], after[0], rtol=0, atol=0)
    assert not torch.allclose(before[1], after[1])
    assert torch.equal(net(clip), before[1])


class FixedFirstClass:
    """Hook on the final norm: its first call (iteration 1) outputs a fixed class token, so the
    class-token path from iteration 1 to iteration 2 is the same for every input."""

    def __init__(self, norm: torch.nn.Module) -> None:
        self.calls = 0
        norm.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.calls += 1
        if self.calls % 2 == 1:
            out = out.clone()
            out[:, 0] = 0.5
        return out


@pytest.mark.parametrize(
    "slot, read", itertools.product(timesformer.MEMORY_SLOTS, timesformer.MEMORY_INPUTS)
)
def test_crvit_memory_carries_the_first_chunk_into_the_second(slot, read):
    net, clip = model(CRViT, memory_slot=slot, memory_input=read), video()
    other = changed(clip, [0, 1, 2, 3])
    FixedFirstClass(net.norm)
    with torch.no_grad():
        first, memory = net.forward_iterations(clip)
        second, other_memory = net.forward_iterations(other)
        torch.testing.assert_close(first[0], second[0])  # the class path is controlled
        assert not torch.allclose(memory, other_memory)
        assert not torch.allclose(first[1], second[1])  # so the memory made this difference
        zeroed, _ = net.forward_iterations(clip, zero_memory=True)
        other_zeroed, _ = net.forward_iterations(other, zero_memory=True)
    torch.testing.assert_close(zeroed[1], other_zeroed[1])  # no memory: no path left


def test_crvit_without_carry_cls_joins_the_iterations_by_the_memory_only():
    net, clip = model(CRViT, carry_cls=False), video()
    other = changed(clip, [0, 1, 2, 3])
    with torch.no_grad():
        first, _ = net.forward_iterations(clip)
        second, _ = net.forward_iterations(other)
        assert not torch.allclose(first[1], second[1])  # the memory carries the first half
        zeroed, _ = net.forward_iterations(clip, zero_memory=True)
        other_zeroed, _ = net.forward_iterations(other, zero_memory=True)
    torch.testing.assert_close(zeroed[1], other_zeroed[1])  # and nothing else does


def test_crvit_memory_enters_from_a_previous_window():
    net, clip = model(CRViT), video()
    with torch.no_grad():
        _, memory = net.forward_iterations(video(seed=5))
        fresh, _ = net.forward_iterations(clip)
        carried, _ = net.forward_iterations(clip, memory=memory)
        zeroed, zero = net.forward_iterations(clip, memory=memory, zero_memory=True)
    assert not torch.allclose(fresh[0], carried[0])
    torch.testing.assert_close(fresh[0], zeroed[0], rtol=0, atol=0)
    assert not zero.any()


def test_crvit_head_reads_cls_cls_then_prev_cls_cls():
    net, clip = model(CRViT, num_frames=12, iterations=3), video(frames=12)
    head_inputs, normed = [], []
    record(net.head, head_inputs, inputs=True)
    record(net.norm, normed)
    with torch.no_grad():
        net.forward_iterations(clip)
    cls = [tokens[:, 0] for tokens in normed]
    assert len(head_inputs) == 3
    torch.testing.assert_close(head_inputs[0], torch.cat([cls[0], cls[0]], 1))
    torch.testing.assert_close(head_inputs[1], torch.cat([cls[0], cls[1]], 1))
    torch.testing.assert_close(head_inputs[2], torch.cat([cls[1], cls[2]], 1))


def test_crvit_next_iteration_starts_from_cls_token_plus_previous_cls():
    net, clip = model(CRViT), video()
    block_inputs, normed = [], []
    record(net.blocks[0], block_inputs, inputs=True)
    record(net.norm, normed)
    with torch.no_grad():
        net.forward_iterations(clip)
    start = (net.cls_token + net.pos_embed[:, :1])[:, 0]  # the class token's position entry
    torch.testing.assert_close(block_inputs[0][:, 0], start.expand(2, -1))
    torch.testing.assert_close(block_inputs[1][:, 0], start + normed[0][:, 0])


def test_crvit_iterations_use_the_time_embeddings_of_their_frames():
    net, clip = model(CRViT), video()
    block_inputs = []
    record(net.blocks[0], block_inputs, inputs=True)
    with torch.no_grad():
        net.time_embed.normal_()
        net.forward_iterations(clip)
        expected = net.embed(clip[:, 4:], 4, net.cls_token)  # iteration 2: frames 4..7
    torch.testing.assert_close(block_inputs[1][:, 1:], expected[:, 1:])


@pytest.mark.parametrize("slot", timesformer.MEMORY_SLOTS)
def test_crvit_memory_joins_time_attention_only(slot):
    net = model(CRViT, memory_slot=slot)
    space, time = [], []
    for block in net.blocks:
        block.attn.register_forward_pre_hook(lambda _, args: space.append(args))
        block.temporal_attn.register_forward_pre_hook(lambda _, args: time.append(args))
    with torch.no_grad():
        net(video())
    # 2 clips x 4 frames per iteration, 1 class + 4 patch tokens each: as in a TimeSformer
    assert {tuple(x.shape for x in args) for args in space} == {((8, 5, 64),)}
    # 2 clips x 4 positions of 4 frames, with 'token' a memory copy before them, and with
    # 'key_value' the clips' memory tokens
    frames = 5 if slot == "token" else 4
    memory = ((2, 64),) if slot == "key_value" else ()
    assert {tuple(x.shape for x in args) for args in time} == {((8, frames, 64), *memory)}


@pytest.mark.parametrize("slot", timesformer.MEMORY_SLOTS)
def test_only_the_token_slot_lets_the_blocks_update_the_memory(slot):
    net, memories = model(CRViT, memory_slot=slot), []
    for block in net.blocks:
        block.register_forward_pre_hook(lambda _, args: memories.append(args[2]))
    with torch.no_grad():
        net(video(), memory=torch.randn(2, 64))
    assert len(memories) == 4  # 2 blocks x 2 iterations
    for first, second in (memories[:2], memories[2:]):
        assert torch.equal(first, second) == (slot != "token")


def memory_block(**overrides) -> crvit.MemoryBlock:
    torch.manual_seed(0)
    block = crvit.MemoryBlock(tiny(memory_slot="token", **overrides), drop_path=0.0).eval()
    with torch.no_grad():
        block.temporal_fc.weight.normal_(std=0.1)
    return block


def test_token_slot_averages_each_clips_copies_into_its_memory():
    block = memory_block()
    xt, memory = torch.randn(6, 4, 64), torch.randn(2, 64)  # 2 clips x 3 positions, 4 frames
    with torch.no_grad():
        out, updated = block.time_attention(xt, memory)
        # each position on its own: the clip's memory token, then that position's frames
        tokens = [torch.cat([memory[i // 3, None], xt[i]])[None] for i in range(6)]
        rows = torch.cat([block.temporal_attn(block.temporal_norm1(row)) for row in tokens])
    torch.testing.assert_close(out, rows[:, 1:])
    mean = rows[:, 0].unflatten(0, (2, 3)).mean(1)
    torch.testing.assert_close(updated, memory + block.temporal_fc(mean))


def test_token_slot_memory_does_not_depend_on_the_order_of_the_positions():
    block, order = memory_block(), torch.tensor([2, 0, 1, 5, 3, 4])  # within each clip
    xt, memory = torch.randn(6, 4, 64), torch.randn(2, 64)
    with torch.no_grad():
        out, updated = block.time_attention(xt, memory)
        permuted_out, permuted = block.time_attention(xt[order], memory)
    torch.testing.assert_close(permuted, updated)
    torch.testing.assert_close(permuted_out, out[order])


def test_token_slot_block_without_memory_is_the_timesformer_block():
    block = memory_block()
    plain = timesformer.Block(tiny(), drop_path=0.0).eval()
    plain.load_state_dict(block.state_dict())
    x = torch.randn(2, 1 + 4 * 4, 64)
    with torch.no_grad():
        ours, memory = block(x, 4)
        theirs, _ = plain(x, 4)
    assert memory is None
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_token_slot_carries_gradient_from_the_last_loss_to_the_memory_rnn():
    # carry_cls=False: the memory is iteration 2's only input from iteration 1
    net = model(CRViT, memory_slot="token", carry_cls=False).train()
    logits, _ = net.forward_iterations(video())
    logits[-1].logsumexp(1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.memory_cell.parameters())


def test_a_memory_key_is_a_token_before_the_frames_whose_output_is_dropped():
    attention = timesformer.Attention(64, 2, qkv_bias=True, attn_drop=0.0, proj_drop=0.0)
    x, memory = torch.randn(6, 4, 64), torch.randn(2, 64)  # 2 clips x 3 positions
    tokens = torch.cat([memory.repeat_interleave(3, dim=0)[:, None], x], dim=1)
    torch.testing.assert_close(attention(x, memory), attention(tokens)[:, 1:])


@pytest.mark.parametrize("read, steps", [("frame_mean", 4), ("token_mean", 1)])
def test_crvit_memory_rnn_reads_the_chunk_patches(read, steps):
    net, clip = model(CRViT, memory_input=read), video()
    cell_inputs, normed = [], []
    record(net.memory_cell, cell_inputs, inputs=True)
    record(net.norm, normed)
    with torch.no_grad():
        net.forward_iterations(clip)
    assert len(cell_inputs) == 2 * steps
    patches = normed[0][:, 1:].unflatten(1, (4, 4))  # [B, positions, frames, D]
    first = patches[:, :, 0].mean(1) if read == "frame_mean" else patches.mean((1, 2))
    torch.testing.assert_close(cell_inputs[0], first)
    if read == "frame_mean":  # in time order
        torch.testing.assert_close(cell_inputs[3], patches[:, :, 3].mean(1))


def test_crvit_zero_memory_leaves_the_rnn_out():
    net = model(CRViT)
    calls = []
    record(net.memory_cell, calls, inputs=True)
    with torch.no_grad():
        net(video(), zero_memory=True)
    assert not calls


@pytest.mark.parametrize(
    "cell, slot, read",
    itertools.product(("gru", "ncgru"), timesformer.MEMORY_SLOTS, timesformer.MEMORY_INPUTS),
)
def test_crvit_every_option_trains(cell, slot, read):
    net = model(CRViT, memory_cell=cell, memory_slot=slot, memory_input=read).train()
    # A non-zero start, or the RNN's recurrent weights would get no gradient from one step
    logits, memory = net.forward_iterations(video(), memory=torch.randn(2, 64))
    assert [tuple(x.shape) for x in logits] == [(2, 5), (2, 5)] and memory.shape == (2, 64)
    logits[-1].logsumexp(1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.memory_cell.parameters())


@pytest.mark.parametrize(
    "cls, options", [(TimeSformer, {}), (CRViT, {}), (CRViT, {"memory_slot": "token"})]
)
def test_gradient_checkpointing_gives_the_same_loss_and_grads(cls, options, monkeypatch):
    nets = [
        model(cls, drop_path_rate=0.2, grad_checkpointing=flag, **options).train()
        for flag in (False, True)
    ]
    calls, real_checkpoint = [], timesformer.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(timesformer, "checkpoint", counted)
    clip, results = video(), []
    for net in nets:
        torch.manual_seed(3)  # the same stochastic-depth draws
        loss = net(clip).logsumexp(1).mean()
        loss.backward()
        results.append((loss, {name: p.grad for name, p in net.named_parameters()}))
    assert len(calls) == 2 * (2 if cls is CRViT else 1)  # every block of every iteration
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize(
    "key, value",
    [
        ("memory_slot", "prepend"),
        ("memory_input", "last"),
        ("loss_iterations", "first"),
        ("memory_cell", "lstm"),
        ("iterations", 3),
        ("iterations", 0),
        ("patch_size", 12),
        ("num_heads", 5),
        ("depth", 1.5),
        ("drop_path_rate", 1.0),
        ("grad_checkpointing", "yes"),
        ("pretrained", 3),
    ],
)
def test_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}") as err:
        tiny(**{key: value})
    assert "\n" not in str(err.value)


def test_memory_slot_error_lists_every_slot():
    with pytest.raises(ConfigError, match="is not one of key_value, token_add, token$"):
        tiny(memory_slot="prepend")


def test_config_defaults_are_vit_base_with_two_iterations():
    defaults = dataclasses.asdict(TimeSformerConfig())
    assert defaults["embed_dim"] == 768 and defaults["depth"] == 12 and defaults["num_frames"] == 16
    assert (defaults["memory_slot"], defaults["memory_input"]) == ("token", "frame_mean")
    assert defaults["loss_iterations"] == "last"
    assert defaults["iterations"] == 2 and defaults["pretrained"] is False
