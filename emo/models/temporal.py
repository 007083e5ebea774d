"""Temporal modules: self-attention over frames, laid out as AnimateDiff's motion modules.

Parameter names follow AnimateDiff's `mm_sd_v15_v2` checkpoint exactly
(`temporal_transformer.{norm,proj_in,transformer_blocks.N.{attention_blocks,norms,ff,ff_norm},
proj_out}`), so its weights load without renaming. EMO adds two things:
- motion frames: the ReferenceNet features of the last n generated frames are prepended on the
  frame axis, attended to, and removed afterwards (paper §3.2 "Temporal Modules");
- speed layers: a cross-attention from each frame to the per-frame speed embedding, inside each
  transformer block after the temporal self-attentions (`speed_norm`, `speed_attention`).
  Its output projection starts at zero, so adding it keeps a pretrained model's behaviour.
  The keys and values come from the speed tokens alone, so they are computed once per video and
  shared by all its pixels (`speed_cross_attention`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ..config import TemporalConfig
from .initialization import apply_zero_init

SPEED_KEY_MARKER = ".speed_"  # every speed-layer parameter name contains this


def sinusoidal_table(length: int, channels: int) -> torch.Tensor:
    """The transformer sinusoid table AnimateDiff stores as `pos_encoder.pe`: [1, length, C]."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


class PositionalEncoding(nn.Module):
    def __init__(self, channels: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, channels), persistent=True)

    def reset_buffers(self) -> None:
        self.pe = sinusoidal_table(self.pe.shape[1], self.pe.shape[2]).to(self.pe.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, T, C)
        length = x.shape[1]
        if length <= self.pe.shape[1]:
            table = self.pe[:, :length]
        else:
            # Longer than the stored table: the table is a fixed formula, so extend it exactly.
            table = sinusoidal_table(length, x.shape[2]).to(device=x.device)
        return x + table.to(dtype=x.dtype)


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention along the frame axis with sinusoidal frame positions."""

    def __init__(self, channels: int, heads: int, max_len: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(channels, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, T, C), N = batch * pixels
        x = self.pos_encoder(x)
        n, t, c = x.shape
        q, k, v = (proj(x).view(n, t, self.heads, c // self.heads).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))  # (N, heads, T, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, t, c)
        return self.to_out[1](self.to_out[0](out))


class TemporalTransformerBlock(nn.Module):
    ZERO_INIT = ("speed_attention.to_out.0",)  # a new speed layer starts as a no-op

    def __init__(self, channels: int, cfg: TemporalConfig, speed_dim: int | None):
        super().__init__()
        heads = cfg.num_attention_heads
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, heads, cfg.max_frames) for _ in range(2)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(2)])
        self.ff = FeedForward(channels, mult=cfg.ff_mult, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(channels)
        if speed_dim is not None:
            self.speed_norm = nn.LayerNorm(channels)
            self.speed_attention = Attention(
                query_dim=channels, cross_attention_dim=speed_dim, heads=heads,
                dim_head=channels // heads, bias=False, out_bias=True,
            )
            apply_zero_init(self)
        else:
            self.speed_norm = None
            self.speed_attention = None

    def forward(self, x: torch.Tensor, speed: torch.Tensor | None) -> torch.Tensor:
        # x: (N, T, C) with N = B * pixels in (b p) order; speed: (B, T, Ds) or None
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        if self.speed_attention is not None and speed is not None:
            x = speed_cross_attention(self.speed_attention, self.speed_norm(x), speed) + x
        return self.ff(self.ff_norm(x)) + x


def speed_cross_attention(attn: Attention, x: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """Cross-attention of every pixel's frames to the speed tokens of its video, with `attn`'s
    projections: x (N, T, C) with N = B * pixels in (b p) order, speed (B, S, Ds) -> (N, T, C).

    The speed embedding is per frame, not per pixel, so the keys and values are the same at every
    pixel of a video: they are projected once per video, and the queries of all its pixels and
    frames attend to them in one sequence of length pixels * T. Same math as repeating the
    speed tokens over the pixels (`speed.repeat_interleave(pixels, 0)` as encoder_hidden_states),
    each query's softmax running over the same S keys, without the (N, S, Ds) copy and the
    N / B-fold key/value projections (~1.2 TFLOP per sd15 backbone call at 512 px).
    """
    n, t, c = x.shape
    b = speed.shape[0]
    if n % b:
        raise ValueError(f"speed_cross_attention: {n} rows of frames do not split over {b} videos.")
    heads = attn.heads
    q = attn.to_q(x).view(b, (n // b) * t, heads, -1).transpose(1, 2)  # (B, heads, pixels*T, hd)
    k = attn.to_k(speed).view(b, speed.shape[1], heads, -1).transpose(1, 2)  # (B, heads, S, hd)
    v = attn.to_v(speed).view(b, speed.shape[1], heads, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    out = out.transpose(1, 2).reshape(n, t, -1)
    return attn.to_out[1](attn.to_out[0](out))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, cfg: TemporalConfig, speed_dim: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, cfg, speed_dim) for _ in range(cfg.num_transformer_blocks)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, speed: torch.Tensor | None) -> torch.Tensor:
        # x: (B, T, C, H, W) -> same
        b, t, c, h, w = x.shape
        residual = x
        y = self.norm(x.reshape(b * t, c, h, w))  # per-frame GroupNorm, as AnimateDiff
        y = y.reshape(b, t, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, t, c)  # (B HW, T, C)
        y = self.proj_in(y)
        for block in self.transformer_blocks:  # speed stays (B, T, Ds): see speed_cross_attention
            y = block(y, speed)
        y = self.proj_out(y)
        y = y.reshape(b, h * w, t, c).permute(0, 2, 3, 1).reshape(b, t, c, h, w)
        return y + residual


class MotionModule(nn.Module):
    """One temporal module; runs on spatial features of (B F) frames."""

    # AnimateDiff zero-initialises the output so a fresh module is the identity.
    ZERO_INIT = ("temporal_transformer.proj_out",)

    def __init__(self, channels: int, cfg: TemporalConfig, speed_dim: int | None):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, cfg, speed_dim)
        apply_zero_init(self)

    def forward(
        self,
        hidden: torch.Tensor,
        num_frames: int,
        motion: torch.Tensor | None = None,
        speed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden: (B*F, C, H, W) frames of B videos; motion: (B or 1, n, C, H, W) features of
        the n motion frames (prepended, then dropped); speed: (B or 1, n+F, Ds)."""
        bf, c, h, w = hidden.shape
        b = bf // num_frames
        x = hidden.reshape(b, num_frames, c, h, w)
        n = 0
        if motion is not None and motion.shape[1] > 0:
            n = motion.shape[1]
            x = torch.cat([motion.to(x.dtype).expand(b, -1, -1, -1, -1), x], dim=1)
        if speed is not None:
            if speed.shape[1] != n + num_frames:
                raise ValueError(
                    f"MotionModule: speed embedding covers {speed.shape[1]} frames but the "
                    f"sequence has {n} motion + {num_frames} clip frames."
                )
            speed = speed.to(x.dtype).expand(b, -1, -1)
        x = self.temporal_transformer(x, speed)[:, n:]
        return x.reshape(bf, c, h, w)
