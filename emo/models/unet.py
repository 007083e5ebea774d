"""The SD1.5-shaped UNet of EMO, built from diffusers' blocks, in its two roles.

- `ReferenceNet`: the plain spatial UNet. It runs once per clip on the reference latent and the
  n motion-frame latents (timestep 0, no text) and returns `ReferenceFeatures`: the
  `attn1` inputs of the reference image in every transformer block, and the features of the
  motion frames at every temporal-module site.
- `Backbone`: the denoising UNet. Every spatial transformer block does reference-attention
  (`attn1`) and audio-attention (`attn2`); after every (resnet, transformer) pair there is a
  temporal module (AnimateDiff placement); the face locator's features are added after `conv_in`.

Both carry exactly the parameter names of diffusers' SD1.5 `UNet2DConditionModel`
(`down_blocks.i.resnets.j`, `down_blocks.i.attentions.j`, ...); the backbone adds
`*.motion_modules.j` with AnimateDiff's names. Video tensors are (B, C, F, H, W); spatial layers
see the frames as a batch of B*F images in (b f) order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import TemporalConfig, UNetConfig
from .reference_attention import (
    AttentionCall,
    AudioAttentionProcessor,
    ReferenceAttentionProcessor,
    ReferenceFeatures,
)
from .temporal import MotionModule


def _resnet(cfg: UNetConfig, in_ch: int, out_ch: int) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_ch, out_channels=out_ch, temb_channels=cfg.time_embed_dim,
                         eps=cfg.norm_eps, groups=cfg.norm_num_groups)


def _transformer(cfg: UNetConfig, ch: int) -> Transformer2DModel:
    heads = cfg.num_attention_heads
    return Transformer2DModel(num_attention_heads=heads, attention_head_dim=ch // heads,
                              in_channels=ch, num_layers=1,
                              cross_attention_dim=cfg.cross_attention_dim,
                              norm_num_groups=cfg.norm_num_groups, use_linear_projection=False)


def _motion_modules(temporal: TemporalConfig | None, ch: int, count: int, speed_dim: int | None):
    if temporal is None:
        return None
    return nn.ModuleList([MotionModule(ch, temporal, speed_dim) for _ in range(count)])


@dataclass
class _Run:
    """State of one UNet forward, handed to every level."""

    temb: torch.Tensor  # (N, D) one row per image
    context: torch.Tensor  # (N, K, D) cross-attention tokens per image
    call: AttentionCall
    num_frames: int = 1
    motion: dict | None = None  # site -> (B, n, C, H, W), backbone
    speed: torch.Tensor | None = None  # (B, n+F, Ds), backbone
    recorded_motion: dict | None = None  # site -> features, ReferenceNet
    checkpointing: bool = False

    def _maybe_checkpoint(self, fn, *args):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def resnet(self, block: ResnetBlock2D, h: torch.Tensor) -> torch.Tensor:
        return self._maybe_checkpoint(block, h, self.temb)

    def transformer(self, block: Transformer2DModel, h: torch.Tensor) -> torch.Tensor:
        def run(x):
            return block(x, encoder_hidden_states=self.context,
                         cross_attention_kwargs={"emo": self.call}, return_dict=False)[0]
        return self._maybe_checkpoint(run, h)

    def site(self, name: str, h: torch.Tensor, module: MotionModule | None) -> torch.Tensor:
        """A temporal-module site: after each (resnet, transformer) pair of a level."""
        if self.recorded_motion is not None:
            per_item = h.unflatten(0, (self.call.batch_size, self.call.images_per_item))
            self.recorded_motion[name] = per_item[:, 1:]  # the motion frames
        if module is None:
            return h
        motion = self.motion.get(name) if self.motion else None
        return self._maybe_checkpoint(
            lambda x: module(x, self.num_frames, motion, self.speed), h)


class _DownLevel(nn.Module):
    def __init__(self, index, cfg, in_ch, out_ch, attention, downsample, temporal, speed_dim):
        super().__init__()
        n = cfg.layers_per_block
        self.prefix = f"down_blocks.{index}"
        self.resnets = nn.ModuleList([_resnet(cfg, in_ch if j == 0 else out_ch, out_ch) for j in range(n)])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch) for _ in range(n)]) if attention else None
        self.motion_modules = _motion_modules(temporal, out_ch, n, speed_dim)
        self.downsamplers = (nn.ModuleList([Downsample2D(out_ch, use_conv=True, out_channels=out_ch,
                                                         padding=1, name="op")])
                             if downsample else None)

    def forward(self, h, run: _Run):
        skips = []
        for j, resnet in enumerate(self.resnets):
            h = run.resnet(resnet, h)
            if self.attentions is not None:
                h = run.transformer(self.attentions[j], h)
            h = run.site(f"{self.prefix}.motion_modules.{j}", h,
                         self.motion_modules[j] if self.motion_modules is not None else None)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class _MidLevel(nn.Module):
    def __init__(self, cfg, ch, temporal, speed_dim):
        super().__init__()
        self.resnets = nn.ModuleList([_resnet(cfg, ch, ch), _resnet(cfg, ch, ch)])
        self.attentions = nn.ModuleList([_transformer(cfg, ch)])
        self.motion_modules = _motion_modules(temporal, ch, 1, speed_dim)

    def forward(self, h, run: _Run):
        h = run.resnet(self.resnets[0], h)
        h = run.transformer(self.attentions[0], h)
        h = run.site("mid_block.motion_modules.0", h,
                     self.motion_modules[0] if self.motion_modules is not None else None)
        return run.resnet(self.resnets[1], h)


class _UpLevel(nn.Module):
    def __init__(self, index, cfg, prev_ch, out_ch, skip_ch, attention, upsample, temporal, speed_dim):
        super().__init__()
        n = cfg.layers_per_block + 1  # one more resnet than the down path: it eats the extra skip
        self.prefix = f"up_blocks.{index}"
        self.resnets = nn.ModuleList([
            _resnet(cfg, (prev_ch if j == 0 else out_ch) + (skip_ch if j == n - 1 else out_ch), out_ch)
            for j in range(n)
        ])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch) for _ in range(n)]) if attention else None
        self.motion_modules = _motion_modules(temporal, out_ch, n, speed_dim)
        self.upsamplers = (nn.ModuleList([Upsample2D(out_ch, use_conv=True, out_channels=out_ch)])
                           if upsample else None)

    def forward(self, h, skips: list, run: _Run, upsample_size=None):
        for j, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips.pop()], dim=1)
            h = run.resnet(resnet, h)
            if self.attentions is not None:
                h = run.transformer(self.attentions[j], h)
            h = run.site(f"{self.prefix}.motion_modules.{j}", h,
                         self.motion_modules[j] if self.motion_modules is not None else None)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


class EMOUNet(nn.Module):
    """SD1.5 UNet layout; `temporal` adds the motion modules (backbone only)."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig | None = None,
                 speed_dim: int | None = None):
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        levels = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList([
            _DownLevel(i, cfg, ch[i - 1] if i else ch[0], ch[i], cfg.attention_levels[i],
                       i < levels - 1, temporal, speed_dim)
            for i in range(levels)
        ])
        self.mid_block = _MidLevel(cfg, ch[-1], temporal, speed_dim)
        rev_ch = ch[::-1]
        rev_attn = cfg.attention_levels[::-1]
        self.up_blocks = nn.ModuleList([
            _UpLevel(i, cfg, rev_ch[i - 1] if i else rev_ch[0], rev_ch[i],
                     rev_ch[min(i + 1, levels - 1)], rev_attn[i], i < levels - 1, temporal, speed_dim)
            for i in range(levels)
        ])
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False
        for name, module in self.named_modules():
            if name.endswith(".attn1"):
                module.set_processor(ReferenceAttentionProcessor(name))
            elif name.endswith(".attn2"):
                module.set_processor(AudioAttentionProcessor())

    @property
    def min_latent_multiple(self) -> int:
        """Latent height/width must be a multiple of this (one halving per down level)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _time_embedding(self, timestep, batch: int, repeat: int, dtype, device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch)
        emb = self.time_proj(t).to(dtype)
        return self.time_embedding(emb).repeat_interleave(repeat, dim=0)  # (batch*repeat, D)

    def _run_levels(self, h: torch.Tensor, run: _Run, with_output: bool) -> torch.Tensor:
        skips = [h]
        for level in self.down_blocks:
            h, level_skips = level(h, run)
            skips.extend(level_skips)
        h = self.mid_block(h, run)
        for i, level in enumerate(self.up_blocks):
            n = len(level.resnets)
            level_skips = skips[-n:]
            del skips[-n:]
            upsample_size = skips[-1].shape[-2:] if skips else None
            h = level(h, level_skips, run, upsample_size)
        if not with_output:
            return h
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


class ReferenceNet(EMOUNet):
    """Spatial UNet over the reference image and the motion frames (paper §3.2 "ReferenceNet")."""

    def __init__(self, cfg: UNetConfig):
        super().__init__(cfg, temporal=None)

    def forward(self, latents: torch.Tensor) -> ReferenceFeatures:
        """latents: (B, 1+n, 4, H, W) = [reference, motion_1..motion_n] per item, VAE-scaled.

        Runs at timestep 0 with a single all-zero context token (EMO uses no text; with a zero
        token SD's cross-attention reduces to its output bias). The output layers are not run:
        only the recorded features are used.
        """
        b, images, c, h, w = latents.shape
        x = latents.reshape(b * images, c, h, w).to(self.conv_in.weight.dtype)
        temb = self._time_embedding(0, b * images, 1, x.dtype, x.device)
        context = x.new_zeros(b * images, 1, self.config.cross_attention_dim)
        call = AttentionCall(mode="write", batch_size=b, images_per_item=images)
        run = _Run(temb=temb, context=context, call=call, recorded_motion={},
                   checkpointing=self.gradient_checkpointing)
        self._run_levels(self.conv_in(x), run, with_output=False)
        return ReferenceFeatures(attention=call.recorded, motion=run.recorded_motion)


class Backbone(EMOUNet):
    """The denoising UNet with reference-, audio- and temporal attention (paper §3.2)."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig, speed_dim: int):
        super().__init__(cfg, temporal=temporal, speed_dim=speed_dim)

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        audio_tokens: torch.Tensor,
        *,
        reference: ReferenceFeatures | None = None,
        reference_rows: torch.Tensor | None = None,
        speed: torch.Tensor | None = None,
        face_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or v) of a clip.

        sample: (B, 4, F, H, W) noisy latents; timestep: scalar or (B,);
        audio_tokens: (B, F, K, D) per-frame audio tokens (zeros = no audio);
        reference: ReferenceNet output for 1 or B items; reference_rows: (B,) bool, rows that
        attend to the reference (None = all); speed: (1 or B, n+F, Ds) speed embedding for the
        motion frames and the clip; face_features: (1 or B, C0, H, W) face-locator output.
        Returns (B, 4, F, H, W).
        """
        b, c, f, h, w = sample.shape
        dtype = self.conv_in.weight.dtype
        x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(dtype)
        temb = self._time_embedding(timestep, b, f, dtype, x.device)
        context = audio_tokens.to(dtype).expand(b, -1, -1, -1).reshape(b * f, *audio_tokens.shape[2:])
        call = AttentionCall(mode="read", batch_size=b, reference=reference,
                             reference_rows=reference_rows)
        run = _Run(temb=temb, context=context, call=call, num_frames=f,
                   motion=reference.motion if reference is not None else None,
                   speed=speed, checkpointing=self.gradient_checkpointing)
        x = self.conv_in(x)
        if face_features is not None:
            x = x + face_features.to(dtype).expand(b, -1, -1, -1).repeat_interleave(f, dim=0)
        out = self._run_levels(x, run, with_output=True)
        return out.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)
