import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from crt_video.models import build_model
from crt_video.utils.flops import count_flops, register_cpu_sdpa_flops

IN_DIM = 24
SMALL = dict(segment_len=16, d_model=32, depth=2, heads=2)


def test_cpu_attention_is_counted():
    register_cpu_sdpa_flops()
    register_cpu_sdpa_flops()  # idempotent
    q = torch.randn(1, 2, 64, 16)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(1, 1, 1, 64, dtype=torch.bool))
    assert counter.get_total_flops() == 2 * (2 * 2 * 64 * 64 * 16)  # QK^T and AV


def test_full_transformer_flops_grow_quadratically():
    model = build_model({"type": "full", **SMALL}, IN_DIM, 5, frame_rate=4.0)
    assert count_flops(model, 1024, IN_DIM) / count_flops(model, 256, IN_DIM) > 4.5


def test_crt_and_segment_flops_per_frame_are_constant_in_length():
    for type_ in ("crt", "segment"):
        model = build_model({"type": type_, **SMALL}, IN_DIM, 5, frame_rate=4.0)
        per_frame = [count_flops(model, T, IN_DIM) / T for T in (32, 128, 512)]
        assert max(per_frame) / min(per_frame) < 1.02, (type_, per_frame)


def test_count_scales_with_batch_and_leaves_the_model_mode_alone():
    model = build_model({"type": "crt", **SMALL}, IN_DIM, 5, frame_rate=4.0).train()
    one = count_flops(model, 48, IN_DIM)
    assert count_flops(model, 48, IN_DIM, batch_size=3) == 3 * one
    assert model.training
