"""Hallo's audio modules: audio cross-attention split into full / face / lip regions.

Hallo (fudan-generative-vision/hallo) puts one of these after every spatial transformer of its
denoising UNet (the backbone's `audio_modules` at each temporal-module site). Per frame:
self-attention, then three cross-attentions to the frame's audio tokens whose outputs are
multiplied by the region masks (pose = background, face, lip) at this resolution, passed through
a 1x1 conv each, weighted by (pose, face, lip) scales and added; then a feed-forward. Parameter
names follow Hallo's `net.pth` so its weights load unchanged.

JoyHallo (jdh-algo/JoyHallo) keeps the three masks and 1x1 convs but computes the cross-attention
once (`attn2_0`, shared by the regions; its file has no `attn2_1`/`attn2_2`): `shared_attention`.

Work skipped, same math (`RegionAudioInputs.support` / `.silent`): a region's term is
`conv(attention * mask)`, so where the mask is 0 it is the conv's bias alone, and the attention,
its projections and the conv need only run on the pixels the mask covers (the lip region is a few
percent of the frame); and on a row whose audio tokens are all zero (guidance's unconditional
branch) the keys and values are zero (no key/value bias), so the attention gives its output bias
at every pixel and the term is `mask * (W_conv @ bias) + conv bias`, with no attention at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ...config import UNetConfig
from ...models.initialization import apply_zero_init
from ...models.reference_attention import row_runs
from ...models.unet import SiteGeometry

REGIONS = ("full", "face", "lip")


@dataclass
class RegionAudioInputs:
    """What the audio modules of one backbone call read."""

    tokens: torch.Tensor  # (N, K, Da) audio tokens per image row (b f)
    masks: list  # per resolution level: [full, face, lip], each (N or 1, H*W)
    scales: tuple | None  # (pose, face, lip) weights
    # per level: [full, face, lip] long tensors of the pixels where a (1, H*W) mask is not 0, or
    # None for a mask that covers every pixel (see `mask_support`); None = run every pixel.
    support: list | None = None
    # per video (rows (b f) in runs of F): True where its audio tokens are all zero; None = none.
    silent: tuple | None = None


def mask_support(masks: list) -> list:
    """`RegionAudioInputs.support` of per-level [full, face, lip] masks of shape (1, H*W): the
    indices of their non-zero pixels (None where that is every pixel). Computed once per video."""
    support = []
    for level in masks:
        indices = []
        for mask in level:
            if mask.ndim != 2 or mask.shape[0] != 1:
                raise ValueError(f"mask_support: a mask shared by every frame is (1, H*W), got {tuple(mask.shape)}")
            nonzero = mask[0].nonzero().flatten()
            indices.append(None if nonzero.numel() == mask.shape[1] else nonzero)
        support.append(indices)
    return support


def _attends_zero_to_bias(attn: Attention) -> bool:
    """Whether `attn` to all-zero tokens outputs its output bias at every query: no key/value
    bias, nothing applied to the tokens or the result besides the projections."""
    return (attn.to_k.bias is None and attn.to_v.bias is None and attn.norm_cross is None
            and attn.group_norm is None and attn.spatial_norm is None and not attn.residual_connection
            and attn.rescale_output_factor == 1.0)


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

    def forward(self, x, tokens, masks, scales, height: int, width: int, support=None, silent=None):
        # x: (N, HW, C); tokens: (N, K, Da); masks: 3 x (N, HW); scales: 3 floats or None;
        # support: 3 x (pixel indices or None) or None; silent: per-video bools or None
        x = self.attn1(self.norm1(x)) + x
        n2 = self.norm2(x)
        if support is not None or silent:
            x = self._regions_sparse(x, n2, tokens, masks, scales, support, silent)
            return self.ff(self.norm3(x)) + x
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

    def _regions_sparse(self, x, n2, tokens, masks, scales, support, silent):
        """`x` plus the three region terms, each run only where its mask is not 0 and, on silent
        rows, without attention (see the module docstring). Same math and summation order as the
        dense path."""
        n, hw, c = n2.shape
        support = support if support is not None else (None, None, None)
        runs = row_runs(silent, n // len(silent)) if silent else [(0, n, False)]
        shared = None
        if self.shared_attention:  # JoyHallo: one attention for the three regions
            shared = {start: self.attn2_0(n2[start:end], encoder_hidden_states=tokens[start:end])
                      for start, end, quiet in runs if not (quiet and _attends_zero_to_bias(self.attn2_0))}
        terms = []
        for k, region in enumerate(REGIONS):
            conv, pixels = getattr(self, f"zero_conv_{region}"), support[k]
            attn = self.attn2_0 if self.shared_attention else getattr(self, f"attn2_{k}")
            mask = masks[k] if pixels is None else masks[k].index_select(1, pixels)  # (N or 1, P)
            pieces = []
            for start, end, quiet in runs:
                if quiet and _attends_zero_to_bias(attn):
                    # attention to zero tokens = its output bias at every pixel, not attended
                    value = attn.to_out[0].bias
                    value = n2.new_zeros(c) if value is None else value.to(n2.dtype)
                    pieces.append(value.expand(end - start, mask.shape[1], c))
                elif shared is not None:
                    pieces.append(shared[start] if pixels is None else shared[start].index_select(1, pixels))
                else:
                    query = n2[start:end] if pixels is None else n2[start:end].index_select(1, pixels)
                    pieces.append(attn(query, encoder_hidden_states=tokens[start:end]))
            attended = pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # (N, P, C)
            term = F.linear(attended * mask[:, :, None], conv.weight.reshape(c, c), conv.bias)  # the 1x1 conv
            if pixels is not None:  # elsewhere the mask is 0: the conv's bias alone
                outside = (conv.bias if conv.bias is not None else n2.new_zeros(c)).to(n2.dtype)
                term = outside.expand(n, hw, c).clone().index_copy_(1, pixels, term)
            terms.append(term if scales is None else scales[k] * term)
        return terms[0] + terms[1] + terms[2] + x  # Hallo's summation order


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
        masks = [m.to(x.dtype) for m in masks]  # (N or 1, HW): broadcast over the rows
        support = inputs.support[level] if inputs.support is not None else None
        for block in self.transformer_blocks:
            x = block(x, tokens.to(x.dtype), masks, scales, h, w, support, inputs.silent)
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
