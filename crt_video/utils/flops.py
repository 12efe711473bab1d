"""Forward FLOPs of a clip classifier, counted by torch.utils.flop_counter.

torch's counter has no formula for the CPU fused attention kernels and counts them as zero,
which would make a full-length Transformer look linear in T; they are registered here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

aten = torch.ops.aten


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def register_cpu_sdpa_flops() -> None:
    """Teach FlopCounterMode the CPU attention kernels (idempotent; skips ops torch counts)."""
    for op, formula in (
        (aten._scaled_dot_product_flash_attention_for_cpu, _cpu_sdpa_flops),
        (aten._scaled_dot_product_flash_attention_for_cpu_backward, _cpu_sdpa_backward_flops),
    ):
        if op not in flop_registry:
            register_flop_formula(op)(formula)


def count_flops(model: nn.Module, T: int, in_dim: int, batch_size: int = 1) -> int:
    """Forward FLOPs (2 per multiply-add) of ``model`` on a batch of clips of T frames."""
    return flop_counter(model, T, in_dim, batch_size).get_total_flops()


def flop_counter(model: nn.Module, T: int, in_dim: int, batch_size: int = 1) -> FlopCounterMode:
    """The counter after one forward of ``model`` (eval mode, no autograd) on a batch of clips of
    T frames: its totals per module and operator, for a breakdown of :func:`count_flops`."""
    param = next(model.parameters())
    features = torch.zeros(batch_size, T, in_dim, dtype=param.dtype, device=param.device)
    lengths = torch.full((batch_size,), T, dtype=torch.long, device=param.device)
    return counted_forward(model, features, lengths)


def counted_forward(model: nn.Module, *inputs: torch.Tensor) -> FlopCounterMode:
    """The counter after one ``model(*inputs)`` in eval mode without autograd."""
    register_cpu_sdpa_flops()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return counter
