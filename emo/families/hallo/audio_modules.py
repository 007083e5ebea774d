"""Hallo's audio modules: audio cross-attention split into full / face / lip regions.

Hallo (fudan-generative-vision/hallo) puts one of these after every spatial transformer of its
denoising UNet (the backbone's `audio_modules` at each temporal-module site). Per frame:
self-attention, then three cross-attentions to the frame's audio tokens whose outputs are
multiplied by the region masks (pose = background, face, lip) at this resolution, passed through
a 1x1 conv each, weighted by (pose, face, lip) scales and added; then a feed-forward. Parameter
names follow Hallo's `net.pth` so its weights load unchanged.

JoyHallo (jdh-algo/JoyHallo) keeps the three masks and 1x1 convs but computes the cross-attention
once (`attn2_0`, shared by the regions; its file has no `attn2_1`/`attn2_2`): `shared_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ...config import UNetConfig
from ...models.initialization import apply_zero_init
from ...models.unet import SiteGeometry

REGIONS = ("full", "face", "lip")


@dataclass
class RegionAudioInputs:
    """What the audio modules of one backbone call read."""

    tokens: torch.Tensor  # (N, K, Da) audio tokens per image row (b f)
    masks: list  # per resolution level: [full, face, lip], each (N or 1, H*W)
    scales: tuple | None  # (pose, face, lip) weights


class RegionAudioBlock(nn.Module):
    ZERO_INIT = tuple(f"zero_conv_{r}" for r in REGIONS)  # zero-initialised, as in Hallo

    def __init__(self, dim: int, heads: int, audio_dim: int, shared_attention: bool = False):
        super().__init__()
        self.shared_attention = shared_attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        for k in range(1 if shared_attention else len(REGIONS)):
            setattr(self, f"attn2_{k}", Attention(query_dim=dim, cross_attention_dim=audio_dim,
                                                  heads=heads, dim_head=dim // heads))
        for region in REGIONS:
            setattr(self, f"zero_conv_{region}", nn.Conv2d(dim, dim, kernel_size=1))
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        apply_zero_init(self)

    def forward(self, x, tokens, masks, scales, height: int, width: int):
        # x: (N, HW, C); tokens: (N, K, Da); masks: 3 x (N, HW); scales: 3 floats or None
        x = self.attn1(self.norm1(x)) + x
        n2 = self.norm2(x)
        terms = []
        shared = self.attn2_0(n2, encoder_hidden_states=tokens) if self.shared_attention else None
        for k, region in enumerate(REGIONS):
            attended = (shared if self.shared_attention
                        else getattr(self, f"attn2_{k}")(n2, encoder_hidden_states=tokens))
            h = attended * masks[k][:, :, None]
            n, hw, c = h.shape
            h = h.transpose(1, 2).reshape(n, c, height, width)
            h = getattr(self, f"zero_conv_{region}")(h).reshape(n, c, hw).transpose(1, 2)
            terms.append(h if scales is None else scales[k] * h)
        x = terms[0] + terms[1] + terms[2] + x  # Hallo's summation order
        return self.ff(self.norm3(x)) + x


class RegionAudioModule(nn.Module):
    """GroupNorm -> 1x1 proj_in (to `inner` width) -> RegionAudioBlock -> proj_out -> + input."""

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int,
                 shared_attention: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([RegionAudioBlock(inner, heads, audio_dim, shared_attention)])
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(self, hidden: torch.Tensor, inputs: RegionAudioInputs, level: int,
                use_scales: bool = True) -> torch.Tensor:
        """hidden: (N, C, H, W) frames at resolution `level`; the masks of that level are used and
        the (pose, face, lip) scales only when `use_scales` (Hallo's eval path passes none)."""
        tokens, masks = inputs.tokens, inputs.masks[level]
        scales = inputs.scales if use_scales else None
        n, c, h, w = hidden.shape
        x = self.proj_in(self.norm(hidden))
        inner = x.shape[1]
        x = x.permute(0, 2, 3, 1).reshape(n, h * w, inner)
        masks = [m.to(x.dtype).expand(n, -1) for m in masks]
        for block in self.transformer_blocks:
            x = block(x, tokens.to(x.dtype), masks, scales, h, w)
        x = x.reshape(n, h, w, inner).permute(0, 3, 1, 2)
        return self.proj_out(x) + hidden


def region_audio_module(cfg: UNetConfig, site: SiteGeometry, audio_dim: int,
                        shared_attention: bool = False) -> RegionAudioModule:
    """Hallo's module at a backbone site. Hallo builds it with an inner width of
    heads * (w // heads) for a w that is not always the site's own width (Q7 of the parity
    fixtures): on the down path the layer's input width, on the up path the width of the
    level's last skip, in the middle the site's width. `shared_attention`: JoyHallo's one
    cross-attention for the three regions."""
    heads = cfg.heads_at(site.level)
    width = {"down": site.in_channels, "up": site.skip_channels, "mid": site.channels}[site.path]
    return RegionAudioModule(site.channels, heads * (width // heads), heads, audio_dim, cfg.norm_num_groups,
                             shared_attention)
