"""TimeSformer (Bertasius et al., arXiv 2102.05095) and CR-ViT, the Compact Recurrent
Transformer's video model, trained end to end on frames.

TimeSformer is the divided space-time ViT of facebookresearch/TimeSformer (``vit.py``,
attention_type='divided_space_time'), with its parameter names, so its checkpoints load 1:1
(:mod:`crt_video.models.timesformer_weights`). In every block the patch tokens first attend over
time (each spatial position across the frames; ``temporal_fc`` then the residual), then over
space (each frame's patches with its own copy of the class token, whose outputs are averaged
back into one), then go through the MLP.

CR-ViT runs the same backbone over a clip in ``iterations`` chunks of consecutive frames. A
memory vector, zero before the first chunk, enters only the time-attention layers; after each
chunk a memory RNN reads the chunk's patch outputs into the memory for the next one. The next
chunk's input class token is ``cls_token`` plus the previous chunk's output class token, and
the head reads both: ``[cls, cls]`` after the first chunk, ``[prev_cls, cls]`` after later ones.

The paper leaves two choices open; each is a config value:

``memory_slot`` (how the memory enters each time-attention layer):
    'key_value' (default): for every spatial position the memory, plus a learned
    ``memory_embed``, is one more token before that position's frame tokens: they attend to it,
    and its own output is dropped (its key and value are computed once per clip). The
    frames' computation is otherwise a TimeSformer's, so a stage-1 TimeSformer starts from what
    it learned.
    'token_add': the memory is added to the time-attention input of every patch token (queries,
    keys and values all see it; the residual stream does not).
``memory_input`` (what the memory RNN reads from a chunk's final-normed patch tokens):
    'frame_mean' (default): the mean over the patches of each frame, one RNN step per frame in
    time order, from the incoming memory.
    'token_mean': one step on the mean of all the chunk's patch tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint

from crt_video.errors import ConfigError
from crt_video.models.memory_cells import MEMORY_CELLS
from crt_video.models.registry import register_model
from crt_video.models.timesformer_weights import load_pretrained
from crt_video.models.vit_layers import DropPath, Mlp, trunc_normal_
from crt_video.utils.sections import require_int

MEMORY_SLOTS = ("key_value", "token_add")
MEMORY_INPUTS = ("frame_mean", "token_mean")
_POSITIVE_INTS = ("img_size", "patch_size", "num_frames", "embed_dim", "depth", "num_heads")
_RATES = ("drop_rate", "attn_drop_rate", "drop_path_rate")


@dataclass(frozen=True)
class TimeSformerConfig:
    """Keys of TimeSformer and CR-ViT (ViT-B/16 by default); the last five are CR-ViT's only.

    ``pretrained``: False (random init), a weights file or folder (official ``.pyth``, Hugging
    Face, or a crt_video TimeSformer/CR-ViT state dict), or True (download
    facebook/timesformer-base-finetuned-k400 from the Hugging Face hub). ``iterations``: chunks
    of consecutive frames CR-ViT runs one after another (``num_frames`` must split evenly).
    ``memory_cell``: the memory RNN ('gru' or 'ncgru'). ``memory_slot`` and ``memory_input``:
    see the module docstring. ``carry_cls`` (the paper's): an iteration's class token starts
    from the previous one's output and the classifier reads [prev_cls, cls]; False leaves the
    memory the only path from one iteration to the next (each starts from the learned class
    token, and the classifier reads [cls, cls]), an ablation.
    """

    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    grad_checkpointing: bool = False
    pretrained: bool | str = False
    iterations: int = 2
    memory_cell: str = "gru"
    memory_slot: str = "key_value"
    memory_input: str = "frame_mean"
    carry_cls: bool = True

    def __post_init__(self) -> None:
        for key in (*_POSITIVE_INTS, "iterations"):
            require_int(f"model.{key}", getattr(self, key), 1)
        for key in _RATES:
            _check_rate(key, getattr(self, key))
        for key, choices in (
            ("memory_cell", tuple(MEMORY_CELLS)),
            ("memory_slot", MEMORY_SLOTS),
            ("memory_input", MEMORY_INPUTS),
        ):
            if getattr(self, key) not in choices:
                raise ConfigError(
                    f"model.{key}={getattr(self, key)!r} is not one of {', '.join(choices)}"
                )
        for key in ("qkv_bias", "grad_checkpointing", "carry_cls"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"model.{key}={getattr(self, key)!r} must be true or false")
        self._check_shapes()
        if not isinstance(self.pretrained, (bool, str, os.PathLike)):
            raise ConfigError(
                f"model.pretrained={self.pretrained!r} must be false, true (download the "
                "Kinetics-400 TimeSformer) or the path of a weights file"
            )

    def _check_shapes(self) -> None:
        if not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ConfigError(f"model.mlp_ratio={self.mlp_ratio!r} must be a positive number")
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"model.img_size={self.img_size} must be a multiple of "
                f"model.patch_size={self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} must be a multiple of "
                f"model.num_heads={self.num_heads}"
            )
        if self.num_frames % self.iterations:
            raise ConfigError(
                f"model.num_frames={self.num_frames} does not split into "
                f"model.iterations={self.iterations} equal chunks of consecutive frames"
            )


def _check_rate(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"model.{key}={value!r} must be a probability in [0, 1)")


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, D], patches in raster order."""
        return self.proj(frames).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention under the official names (qkv, proj). ``memory`` [B, D], if
    given, is one more key and value for every row of x [B R, n, D] (rows grouped by clip)."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        heads = self.num_heads
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=heads)
        if memory is not None:
            # The memory's key and value are the same for every row of its clip: projected once
            # per clip, not once per spatial position (~3% of CR-ViT-B's FLOPs).
            _, mk, mv = rearrange(
                self.qkv(memory), "b (three h d) -> three b h 1 d", three=3, h=heads
            )
            rows = x.shape[0] // memory.shape[0]
            k = torch.cat([mk.repeat_interleave(rows, dim=0), k], dim=2)
            v = torch.cat([mv.repeat_interleave(rows, dim=0), v], dim=2)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj_drop(self.proj(rearrange(x, "b h n d -> b n (h d)")))


class Block(nn.Module):
    """Divided space-time block. Tokens: the class token, then the patches ordered (n t):
    patch n of frame t is at 1 + n * T + t, as in the official code."""

    def __init__(self, cfg: TimeSformerConfig, drop_path: float) -> None:
        super().__init__()
        dim, heads = cfg.embed_dim, cfg.num_heads
        self.memory_slot = cfg.memory_slot
        attention = (dim, heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(*attention)
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(*attention)
        self.temporal_fc = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)

    def forward(
        self, x: torch.Tensor, num_frames: int, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, 1 + N T, D] -> the same shape; ``memory`` [B, D] joins the time attention."""
        batch = x.shape[0]
        cls, patches = x[:, :1], x[:, 1:]
        # Stochastic depth drops rows of the attention layouts ((b n) for time, (b t) for
        # space), not whole clips: the official block does the same.
        xt = rearrange(patches, "b (n t) d -> (b n) t d", t=num_frames)
        time_out = self.drop_path(self._time_attention(xt, memory))
        patches = patches + self.temporal_fc(rearrange(time_out, "(b n) t d -> b (n t) d", b=batch))

        xs = rearrange(patches, "b (n t) d -> (b t) n d", t=num_frames)
        xs = torch.cat([cls.repeat_interleave(num_frames, dim=0), xs], dim=1)
        space_out = self.drop_path(self.attn(self.norm1(xs)))
        cls_out = rearrange(space_out[:, :1], "(b t) 1 d -> b t d", b=batch).mean(1, keepdim=True)
        patch_out = rearrange(space_out[:, 1:], "(b t) n d -> b (n t) d", b=batch)

        x = torch.cat([cls + cls_out, patches + patch_out], dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _time_attention(self, xt: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        if memory is None:
            return self.temporal_attn(self.temporal_norm1(xt))
        if self.memory_slot == "key_value":
            # Normed like the frame tokens, as if it were one more token at every position.
            return self.temporal_attn(self.temporal_norm1(xt), self.temporal_norm1(memory))
        # One copy of the clip's memory per spatial position: rows of xt are (b n).
        memory = memory.repeat_interleave(xt.shape[0] // memory.shape[0], dim=0)[:, None]
        return self.temporal_attn(self.temporal_norm1(xt + memory))


class VideoBackbone(nn.Module):
    """Embeddings, blocks and final norm shared by TimeSformer and CR-ViT (official names)."""

    # Parameter prefixes a pretrained file may lack: newly initialised, not an error.
    optional_weights: tuple[str, ...] = ("head.",)

    def __init__(self, in_dim: int, cfg: TimeSformerConfig) -> None:
        super().__init__()
        self.num_frames, self.img_size = cfg.num_frames, cfg.img_size
        self.grad_checkpointing = cfg.grad_checkpointing
        self.embed_dim = cfg.embed_dim
        num_patches = (cfg.img_size // cfg.patch_size) ** 2
        self.patch_embed = PatchEmbed(in_dim, cfg.embed_dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, cfg.embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, cfg.embed_dim))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.time_drop = nn.Dropout(cfg.drop_rate)
        # Stochastic depth rising linearly over the blocks (torch.linspace, but also on meta).
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        # Every block but the first starts as a plain ViT block (the official init).
        for block in self.blocks[1:]:
            nn.init.zeros_(block.temporal_fc.weight)
            nn.init.zeros_(block.temporal_fc.bias)

    def embed(self, video: torch.Tensor, first_frame: int, cls: torch.Tensor) -> torch.Tensor:
        """Frames [B, t, C, H, W] starting at clip frame ``first_frame``, and the class token
        [B or 1, 1, D] -> tokens [B, 1 + N t, D]."""
        batch, num_frames = video.shape[:2]
        patches = self.patch_embed(video.flatten(0, 1)) + self.pos_embed[:, 1:]
        patches = rearrange(self.pos_drop(patches), "(b t) n d -> b n t d", b=batch)
        time_embed = self.time_embed[:, first_frame : first_frame + num_frames]
        patches = self.time_drop(patches + time_embed[:, None]).flatten(1, 2)
        cls = self.pos_drop(cls + self.pos_embed[:, :1]).expand(batch, -1, -1)
        return torch.cat([cls, patches], dim=1)

    def encode(
        self, x: torch.Tensor, num_frames: int, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The blocks and the final norm over tokens from :meth:`embed`."""
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, num_frames, memory, use_reentrant=False)
            else:
                x = block(x, num_frames, memory)
        return self.norm(x)

    def check_video(self, video: torch.Tensor) -> None:
        expected = (self.num_frames, self.img_size, self.img_size)
        if video.dim() != 5 or (video.shape[1], *video.shape[3:]) != expected:
            raise ValueError(
                f"video of shape {list(video.shape)}; this model takes [B, {self.num_frames}, C, "
                f"{self.img_size}, {self.img_size}] (num_frames, img_size of its config)"
            )


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_model("timesformer", TimeSformerConfig, tasks=("video",))
class TimeSformer(VideoBackbone):
    """Divided space-time attention over all the clip's frames at once: video [B, T, C, H, W]
    (normalised) -> logits [B, num_classes] from the final-normed class token."""

    def __init__(self, in_dim: int, num_classes: int, config: TimeSformerConfig) -> None:
        super().__init__(in_dim, config)
        self.head = nn.Linear(config.embed_dim, num_classes)
        _init_weights(self.head)
        if config.pretrained:
            load_pretrained(self, config.pretrained)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """The final-normed class token [B, D] (what the head reads)."""
        self.check_video(video)
        return self.encode(self.embed(video, 0, self.cls_token), video.shape[1])[:, 0]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(video))


@register_model("crvit", TimeSformerConfig, tasks=("video",))
class CRViT(VideoBackbone):
    """CR-ViT: the TimeSformer backbone run over ``iterations`` chunks of the clip with a
    recurrent memory in the time attention (module docstring). A TimeSformer state dict loads
    into it; the memory RNN, ``memory_embed`` and the 2D-wide head start new."""

    optional_weights = ("head.", "memory_cell.", "memory_embed")

    def __init__(self, in_dim: int, num_classes: int, config: TimeSformerConfig) -> None:
        super().__init__(in_dim, config)
        self.iterations = config.iterations
        self.memory_input = config.memory_input
        self.carry_cls = config.carry_cls
        self.memory_cell = MEMORY_CELLS[config.memory_cell](config.embed_dim, config.embed_dim)
        self.memory_embed = None
        if config.memory_slot == "key_value":
            # Tells the memory token apart from the frames, as time_embed marks those.
            self.memory_embed = nn.Parameter(trunc_normal_(torch.zeros(config.embed_dim), std=0.02))
        self.head = nn.Linear(2 * config.embed_dim, num_classes)
        _init_weights(self.head)
        if config.pretrained:
            load_pretrained(self, config.pretrained)

    def forward(
        self, video: torch.Tensor, memory: torch.Tensor | None = None, zero_memory: bool = False
    ) -> torch.Tensor:
        """Logits [B, num_classes] after the last iteration (see :meth:`forward_iterations`)."""
        return self.forward_iterations(video, memory, zero_memory)[0][-1]

    def forward_iterations(
        self, video: torch.Tensor, memory: torch.Tensor | None = None, zero_memory: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each iteration's logits [B, C] and the memory [B, D] after the last one.

        ``memory``: where the first iteration starts (a previous window's final memory; None:
        zeros). ``zero_memory``: every iteration sees a zero memory and the RNN is not run (the
        returned memory is zeros), the ablation of the memory path.
        """
        self.check_video(video)
        if memory is None or zero_memory:
            memory = video.new_zeros(video.shape[0], self.embed_dim)
        logits, prev_cls = [], None
        chunk_len = self.num_frames // self.iterations
        # NC-GRU: one orthogonal matrix per forward, not one per RNN step.
        with parametrize.cached():
            for index, chunk in enumerate(video.split(chunk_len, dim=1)):
                cls = self.cls_token if prev_cls is None else self.cls_token + prev_cls[:, None]
                x = self.embed(chunk, index * chunk_len, cls)
                x = self.encode(x, chunk_len, self._memory_token(memory))
                cls = x[:, 0]
                logits.append(self.head(torch.cat([cls if prev_cls is None else prev_cls, cls], 1)))
                if not zero_memory:
                    memory = self._read_memory(x[:, 1:], memory, chunk_len)
                prev_cls = cls if self.carry_cls else None
        return logits, memory

    def _memory_token(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.memory_embed is None else memory + self.memory_embed

    def _read_memory(
        self, patches: torch.Tensor, memory: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        """The memory RNN over a chunk's normed patch outputs [B, N t, D], from ``memory``."""
        if self.memory_input == "token_mean":
            return self.memory_cell(patches.mean(1), memory)
        frames = rearrange(patches, "b (n t) d -> t b n d", t=num_frames).mean(2)
        for frame in frames:
            memory = self.memory_cell(frame, memory)
        return memory
