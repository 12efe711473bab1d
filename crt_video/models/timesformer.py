"""TimeSformer (Bertasius et al., arXiv 2102.05095), trained end to end on frames, and the
backbone CR-ViT shares with it.

TimeSformer is the divided space-time ViT of facebookresearch/TimeSformer (``vit.py``,
attention_type='divided_space_time'), with its parameter names, so its checkpoints load 1:1
(:mod:`crt_video.models.timesformer_weights`). In every block the patch tokens first attend over
time (each spatial position across the frames; ``temporal_fc`` then the residual), then over
space (each frame's patches with its own copy of the class token, whose outputs are averaged
back into one), then go through the MLP.

CR-ViT (:mod:`crt_video.models.crvit`) runs this backbone over a clip in chunks with a recurrent
memory in the time attention; its keys are in :class:`TimeSformerConfig` too, so that one config
switches ``type`` between the two (a TimeSformer ignores them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from crt_video.errors import ConfigError
from crt_video.models.memory_cells import MEMORY_CELLS
from crt_video.models.registry import register_model
from crt_video.models.timesformer_weights import load_pretrained
from crt_video.models.vit_layers import DropPath, Mlp, trunc_normal_
from crt_video.utils.sections import require_int

MEMORY_SLOTS = ("key_value", "token_add", "token")
MEMORY_INPUTS = ("frame_mean", "token_mean")
LOSS_ITERATIONS = ("last", "all")
_POSITIVE_INTS = ("img_size", "patch_size", "num_frames", "embed_dim", "depth", "num_heads")
_RATES = ("drop_rate", "attn_drop_rate", "drop_path_rate")


@dataclass(frozen=True)
class TimeSformerConfig:
    """Keys of TimeSformer and CR-ViT (ViT-B/16 by default); the last six are CR-ViT's only.

    ``pretrained``: False (random init), a weights file or folder (official ``.pyth``, Hugging
    Face, or a crt_video TimeSformer/CR-ViT state dict), or True (download
    facebook/timesformer-base-finetuned-k400 from the Hugging Face hub). ``iterations``: chunks
    of consecutive frames CR-ViT runs one after another (``num_frames`` must split evenly).
    ``memory_cell``: the memory RNN ('gru' or 'ncgru'). ``memory_slot`` and ``memory_input``:
    see :mod:`crt_video.models.crvit`. ``carry_cls`` (the paper's): an iteration's class token
    starts from the previous one's output and the classifier reads [prev_cls, cls]; False leaves
    the memory the only path from one iteration to the next (each starts from the learned class
    token, and the classifier reads [cls, cls]), an ablation. ``loss_iterations``: the training
    loss is the cross-entropy of the last iteration's logits ('last') or the mean of every
    iteration's, each against the clip's label ('all'); evaluation reads the last one either way.
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
    memory_slot: str = "token"
    memory_input: str = "frame_mean"
    carry_cls: bool = True
    loss_iterations: str = "last"

    def __post_init__(self) -> None:
        for key in (*_POSITIVE_INTS, "iterations"):
            require_int(f"model.{key}", getattr(self, key), 1)
        for key in _RATES:
            _check_rate(key, getattr(self, key))
        for key, choices in (
            ("memory_cell", tuple(MEMORY_CELLS)),
            ("memory_slot", MEMORY_SLOTS),
            ("memory_input", MEMORY_INPUTS),
            ("loss_iterations", LOSS_ITERATIONS),
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
    patch n of frame t is at 1 + n * T + t, as in the official code. A memory [B, D] passes
    through untouched: CR-ViT's :class:`~crt_video.models.crvit.MemoryBlock` gives it a slot."""

    def __init__(self, cfg: TimeSformerConfig, drop_path: float) -> None:
        super().__init__()
        dim, heads = cfg.embed_dim, cfg.num_heads
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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, 1 + N T, D] -> the same shape, and the memory as the block leaves it."""
        batch = x.shape[0]
        cls, patches = x[:, :1], x[:, 1:]
        xt = rearrange(patches, "b (n t) d -> (b n) t d", t=num_frames)
        time_out, memory = self.time_attention(xt, memory)
        patches = patches + self.temporal_fc(rearrange(time_out, "(b n) t d -> b (n t) d", b=batch))

        xs = rearrange(patches, "b (n t) d -> (b t) n d", t=num_frames)
        xs = torch.cat([cls.repeat_interleave(num_frames, dim=0), xs], dim=1)
        space_out = self.drop_path(self.attn(self.norm1(xs)))
        cls_out = rearrange(space_out[:, :1], "(b t) 1 d -> b t d", b=batch).mean(1, keepdim=True)
        patch_out = rearrange(space_out[:, 1:], "(b t) n d -> b (n t) d", b=batch)

        x = torch.cat([cls + cls_out, patches + patch_out], dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x))), memory

    def time_attention(
        self, xt: torch.Tensor, memory: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows [(b n), t, D] (each spatial position's frame tokens) -> their time-attention
        outputs, before ``temporal_fc``, and the memory (here: as given). Stochastic depth drops
        rows of the attention layouts ((b n) here, (b t) in space), not whole clips: the
        official block does the same."""
        return self.drop_path(self.temporal_attn(self.temporal_norm1(xt))), memory


class VideoBackbone(nn.Module):
    """Embeddings, blocks and final norm shared by TimeSformer and CR-ViT (official names)."""

    # Parameter prefixes a pretrained file may lack: newly initialised, not an error.
    optional_weights: tuple[str, ...] = ("head.",)
    block_class: type[Block] = Block

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
        self.blocks = nn.ModuleList(self.block_class(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights)
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
        """The blocks and the final norm over tokens from :meth:`embed`; ``memory`` [B, D] is
        CR-ViT's, for the blocks' memory slots."""
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x, memory = checkpoint(block, x, num_frames, memory, use_reentrant=False)
            else:
                x, memory = block(x, num_frames, memory)
        return self.norm(x)

    def check_video(self, video: torch.Tensor) -> None:
        expected = (self.num_frames, self.img_size, self.img_size)
        if video.dim() != 5 or (video.shape[1], *video.shape[3:]) != expected:
            raise ValueError(
                f"video of shape {list(video.shape)}; this model takes [B, {self.num_frames}, C, "
                f"{self.img_size}, {self.img_size}] (num_frames, img_size of its config)"
            )


def init_weights(module: nn.Module) -> None:
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
        init_weights(self.head)
        if config.pretrained:
            load_pretrained(self, config.pretrained)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """The final-normed class token [B, D] (what the head reads)."""
        self.check_video(video)
        return self.encode(self.embed(video, 0, self.cls_token), video.shape[1])[:, 0]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(video))
