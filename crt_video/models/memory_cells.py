"""Recurrent cells that carry CRT's memory vector, with a masked update for padded batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

from crt_video.errors import ConfigError


def modrelu(v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.relu(v.abs() + bias)


class NCGRUCell(nn.Module):
    """Orthogonal GRU (Mucllari et al., Neural Computation 2024).

    r = sigmoid(W_r x + U_r h + b_r), z = sigmoid(W_z x + U_z h + b_z),
    c = modReLU(W_c x + r * (h W)), h' = z * h + (1 - z) * c, with W = Q D orthogonal:
    Q from torch's Cayley parametrization and D a fixed diagonal of +-1. Plain Cayley maps
    cannot reach matrices with eigenvalue -1; the -1 entries of D give the scaled Cayley family.
    """

    def __init__(self, input_size: int, hidden_size: int, num_negative: int | None = None) -> None:
        super().__init__()
        num_negative = hidden_size // 2 if num_negative is None else num_negative
        self.input = nn.Linear(input_size, 3 * hidden_size)
        self.gates = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.recurrent = orthogonal(
            nn.Linear(hidden_size, hidden_size, bias=False), orthogonal_map="cayley"
        )
        self.modrelu_bias = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))
        diagonal = torch.ones(hidden_size)
        diagonal[:num_negative] = -1.0
        self.register_buffer("diagonal", diagonal)
        self._inference_matrix: tuple[tuple, torch.Tensor] | None = None

    @property
    def recurrent_matrix(self) -> torch.Tensor:
        """W = Q D (D scales the columns), orthogonal.

        Without autograd (streaming inference) the Cayley solve runs once and is reused while the
        weights stay the same: the key holds the parameters' version counters, which every
        in-place update (optimizer step, load_state_dict) bumps.
        """
        parametrized = parametrize.is_parametrized(self.recurrent)
        original = self.recurrent.parametrizations.weight.original if parametrized else None
        # Tensors made under inference_mode have no version counter to key a cache on.
        if (
            torch.is_grad_enabled()
            or original is None
            or original.is_inference()
            or self.diagonal.is_inference()
        ):
            return self.recurrent.weight * self.diagonal
        key = (original, original._version, self.diagonal._version, original.device, original.dtype)
        if self._inference_matrix is None or not _same_key(self._inference_matrix[0], key):
            self._inference_matrix = (key, self.recurrent.weight * self.diagonal)
        return self._inference_matrix[1]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self._step(self.input(x), h, self._recurrent_weights())

    def scan(self, xs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The state after each step of xs [B, n, d] from h: [B, n, d]. The input projection and
        the orthogonal matrix (a Cayley solve while training) are computed once, not per step."""
        recurrent = self._recurrent_weights()
        states = []
        for x in self.input(xs).unbind(1):
            h = self._step(x, h, recurrent)
            states.append(h)
        return torch.stack(states, dim=1)

    def _recurrent_weights(self) -> torch.Tensor:
        # [U_r U_z W] side by side: one product with h per step
        return torch.cat([self.gates.weight.T, self.recurrent_matrix], dim=1)

    def _step(self, x: torch.Tensor, h: torch.Tensor, recurrent: torch.Tensor) -> torch.Tensor:
        x_r, x_z, x_c = x.chunk(3, dim=-1)
        h_r, h_z, h_c = (h @ recurrent).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        c = modrelu(x_c + r * h_c, self.modrelu_bias)
        return z * h + (1 - z) * c


def _same_key(cached: tuple, key: tuple) -> bool:
    # The tensor is compared by identity: == on tensors would compare their values.
    return cached[0] is key[0] and cached[1:] == key[1:]


MEMORY_CELLS = {"gru": nn.GRUCell, "ncgru": NCGRUCell}


def timescale_gate_biases(hidden_size: int, longest: float, shortest: float = 2.0) -> torch.Tensor:
    """Update-gate biases that spread the units' time scales log-uniformly from ``shortest`` to
    ``longest`` steps (chrono initialisation, Tallec & Ollivier, ICLR 2018, with time scales
    log-uniform rather than uniform, so that every octave of the range has as many units).

    A unit whose update gate keeps z = sigmoid(b) of its state per step forgets over
    1 / (1 - z) = 1 + e^b steps, so the bias for a time scale of t steps is log(t - 1); the
    shortest, 2 steps, is bias 0, the mean of torch's own initialisation."""
    if not longest > shortest >= 2.0:
        raise ValueError(
            f"time scales need longest > shortest >= 2 steps, got {longest}, {shortest}"
        )
    quantiles = (torch.arange(hidden_size, dtype=torch.float64) + 0.5) / hidden_size
    timescales = shortest * (longest / shortest) ** quantiles
    return torch.log(timescales - 1.0).float()


@dataclass(frozen=True)
class MemoryGateConfig:
    """How a memory's update gate starts: the model keys ``memory_horizon`` and
    ``memory_gate_bias``, shared by the models with a gated memory (crt, gru).

    With ``memory_horizon`` (seconds) the units' time scales spread log-uniformly from 2 steps to
    the horizon (:func:`timescale_gate_biases`), converted to steps with the features' frame
    rate, so no single constant decides how far back the memory reaches. ``memory_gate_bias``,
    when set, gives every unit one bias instead (a time scale of 1 + e^bias steps) and the
    horizon is not used. With both None the cell keeps torch's initialisation (z about 0.5: half
    the memory is gone after every step)."""

    # One bias of 4 (56 steps), by the worst case of the memory benchmark's sets, seeds and gaps
    # and of the clips' gap tables; time scales spread to half an hour learned later and scored
    # lower on clips (README, how long the memory holds).
    memory_horizon: float | None = None
    memory_gate_bias: float | None = 4.0

    def check_memory_gate(self) -> None:
        horizon = self.memory_horizon
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, int | float) or horizon <= 0
        ):
            raise ConfigError(
                f"model.memory_horizon={horizon!r} must be a positive number of seconds or None"
            )
        bias = self.memory_gate_bias
        if bias is not None and (isinstance(bias, bool) or not isinstance(bias, int | float)):
            raise ConfigError(f"model.memory_gate_bias={bias!r} must be a number or None")

    def update_gate_bias(
        self, hidden_size: int, steps_per_second: float | None
    ) -> float | torch.Tensor | None:
        """The initial update-gate bias: one number, one per unit, or None (torch's)."""
        if self.memory_gate_bias is not None:
            return float(self.memory_gate_bias)
        if self.memory_horizon is None:
            return None
        if steps_per_second is None:
            raise ConfigError(
                f"model.memory_horizon={self.memory_horizon} is in seconds: the model must be "
                "built with the features' frame rate (sampling.fps)"
            )
        longest = max(self.memory_horizon * steps_per_second, 3.0)
        return timescale_gate_biases(hidden_size, longest)


def init_update_gate_bias(cell: nn.Module, bias: float | torch.Tensor) -> None:
    """Start the update gate z near sigmoid(bias), one value for every unit or one per unit: with
    z = 0.5 (bias 0) a memory keeps only 2^-n of what it held n steps ago, and the gradient
    reaching early steps shrinks alike. ``cell``: an nn.GRUCell, an NCGRUCell, or an nn.GRU (every
    layer)."""
    with torch.no_grad():
        if isinstance(cell, NCGRUCell):
            hidden = cell.recurrent.weight.shape[0]
            cell.input.bias[hidden : 2 * hidden] = bias
            return
        hidden = cell.hidden_size
        # torch's GRUs order the gates r, z, n in both biases.
        layers = range(cell.num_layers) if isinstance(cell, nn.GRU) else [None]
        for layer in layers:
            suffix = "" if layer is None else f"_l{layer}"
            getattr(cell, f"bias_ih{suffix}")[hidden : 2 * hidden] = bias
            getattr(cell, f"bias_hh{suffix}")[hidden : 2 * hidden] = 0.0


class MaskedCell(nn.Module):
    """Updates only the rows marked in ``update``; the others keep their state exactly."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        update_gate_bias: float | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = MEMORY_CELLS[kind](input_size, hidden_size)
        if update_gate_bias is not None:
            init_update_gate_bias(self.cell, update_gate_bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """One step, x [B, d] and update [B] -> the new state [B, d]; or a sequence, x [B, n, d]
        and update [B, n] -> the state after each step [B, n, d] (see :meth:`scan`)."""
        if x.dim() == 3:
            return self.scan(x, h, update)
        return torch.where(update[:, None], self.cell(x, h), h)

    def scan(self, xs: torch.Tensor, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The state after each step of xs [B, n, d] from h [B, d]: [B, n, d]. valid [B, n] marks
        each row's valid steps, which come first: through the padding after them a row keeps
        the state of its last valid step (h for a row with none). Called through the module
        (``cell(xs, h, valid)``), so FLOP counters and hooks see it as this module's work."""
        # Traced (ONNX export), the GRU's steps are unrolled into the graph.
        if isinstance(self.cell, nn.GRUCell) and not torch.jit.is_tracing():
            states = _gru_sequence(self.cell, xs, h)
        elif isinstance(self.cell, NCGRUCell):
            states = self.cell.scan(xs, h)
        else:
            states, state = [], h
            for x in xs.unbind(1):
                state = self.cell(x, state)
                states.append(state)
            states = torch.stack(states, dim=1)
        num_valid = valid.sum(1)
        last = (num_valid - 1).clamp(min=0)[:, None, None].expand(-1, 1, states.shape[-1])
        kept = torch.where(num_valid[:, None] > 0, states.gather(1, last)[:, 0], h)
        return torch.where(valid[..., None], states, kept[:, None])


def _gru_sequence(cell: nn.GRUCell, xs: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """cell's states over xs [B, n, d] in one fused kernel (torch's GRU operator, whose one layer
    has the cell's weights and gate order): a loop of cell steps costs ~1.5-2x as much."""
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    states, _ = torch.ops.aten.gru.input(
        xs, h[None].contiguous(), weights, True, 1, 0.0, False, False, True
    )
    return states
