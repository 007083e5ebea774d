"""The SD1.5-shaped UNet of the EMO lineage, built from diffusers' blocks, in its two roles.

- `ReferenceNet`: the plain spatial UNet. It runs once per clip on the reference latent and the
  n motion-frame latents (timestep 0) and returns `ReferenceFeatures`: the `attn1` inputs of the
  reference image in every transformer block, and the features of the motion frames at every
  temporal-module site.
- `Backbone`: the denoising UNet. Every spatial transformer block does reference-attention
  (`attn1`) and cross-attention (`attn2`) to a per-frame context; after every (resnet,
  transformer) pair there is a temporal-module site (AnimateDiff placement), which may also hold
  an audio module; the face locator's features are added after `conv_in`.

Both carry exactly the parameter names of diffusers' SD1.5 `UNet2DConditionModel`
(`down_blocks.i.resnets.j`, `down_blocks.i.attentions.j`, ...); the backbone adds
`*.motion_modules.j` with AnimateDiff's names and, where a model family has them,
`*.audio_modules.j`. Video tensors are (B, C, F, H, W); spatial layers see the frames as a batch
of B*F images in (b f) order.

What differs between model families (what `attn2` attends to, which sites run their temporal
module, where the motion-frame features come from, the audio modules) is chosen by options that
the family passes in (`ReferenceOptions`, `BackboneOptions`); this file names no family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import TemporalConfig, UNetConfig
from .reference_attention import (
    AttentionCall,
    ContextAttentionProcessor,
    ReferenceAttentionProcessor,
    ReferenceFeatures,
)
from .temporal import MotionModule

LEVEL_KINDS = ("attention", "plain", "mid")  # levels with transformers, without, and the middle


@dataclass(frozen=True)
class SitePlan:
    """What a temporal-module site does, for one kind of level (see LEVEL_KINDS)."""

    temporal: bool = True  # run the site's temporal module
    motion_frames: bool = True  # prepend the motion frames' features to it
    audio_scales: bool = True  # hand the per-region audio weights to the site's audio module


EVERY_SITE = {kind: SitePlan() for kind in LEVEL_KINDS}


@dataclass(frozen=True)
class SiteGeometry:
    """Where an audio module sits, for a family's `audio_module` factory: the path and level,
    the layer within it, the channel count there, and the widths around it."""

    path: str  # "down", "mid" or "up"
    kind: str  # "attention", "plain" or "mid"
    level: int  # resolution level, 0 = the latent resolution
    layer: int
    channels: int
    in_channels: int  # the layer's input width (down path), else `channels`
    skip_channels: int  # the width of the level's last skip (up path), else `channels`


AudioModuleFactory = Callable[[UNetConfig, SiteGeometry], nn.Module | None]


@dataclass(frozen=True)
class ReferenceOptions:
    """How a ReferenceNet hands over its features."""

    # Features of the motion frames for each temporal site: "block_output" (EMO: the output of
    # the (resnet, transformer) pair at the site) or "attention_input" (the `attn1` inputs of the
    # transformer before the site; plain levels then have none).
    motion_source: str = "block_output"
    # Round every handed-over feature through this dtype (a peer that stores its bank in fp16).
    feature_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.motion_source not in ("block_output", "attention_input"):
            raise ValueError(f"ReferenceOptions: motion_source must be 'block_output' or 'attention_input', "
                             f"got {self.motion_source!r}")


@dataclass(frozen=True)
class BackboneOptions:
    """How a backbone uses its conditions."""

    site_plan: Mapping[str, SitePlan] = field(default_factory=lambda: dict(EVERY_SITE))
    # How reference items spread over the (b f) rows: False: row b*F+i uses item b; True: item
    # (b*F+i) % B (a reader that tiles its bank over the frames).
    tile_reference_items: bool = False
    # Builds the audio module of each site (None: the site has none).
    audio_module: AudioModuleFactory | None = None
    # Factor on the `attn2` output (a family that scales its audio cross-attention).
    context_scale: float = 1.0


def _resnet(cfg: UNetConfig, in_ch: int, out_ch: int) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_ch, out_channels=out_ch, temb_channels=cfg.time_embed_dim,
                         eps=cfg.norm_eps, groups=cfg.norm_num_groups)


def _transformer(cfg: UNetConfig, ch: int, level: int) -> Transformer2DModel:
    heads = cfg.heads_at(level)
    return Transformer2DModel(num_attention_heads=heads, attention_head_dim=ch // heads,
                              in_channels=ch, num_layers=1,
                              cross_attention_dim=cfg.cross_attention_dim,
                              norm_num_groups=cfg.norm_num_groups, use_linear_projection=False)


def _motion_modules(temporal: TemporalConfig | None, ch: int, count: int, speed_dim: int | None):
    if temporal is None:
        return None
    return nn.ModuleList([MotionModule(ch, temporal, speed_dim) for _ in range(count)])


def _audio_modules(cfg: UNetConfig, factory: AudioModuleFactory | None, sites: list[SiteGeometry]):
    if factory is None:
        return None
    modules = [factory(cfg, site) for site in sites]
    return nn.ModuleList(modules) if any(m is not None for m in modules) else None


def attention_of_site(site: str) -> str:
    """`down_blocks.1.motion_modules.0` -> the `attn1` of the transformer just before it."""
    return site.replace("motion_modules", "attentions") + ".transformer_blocks.0.attn1"


@dataclass
class _Pass:
    """State of one UNet forward, handed to every level."""

    temb: torch.Tensor  # (N, D) one row per image
    context: torch.Tensor | None  # (N, K, D) cross-attention tokens per image
    call: AttentionCall
    num_frames: int = 1
    motion: dict | None = None  # site -> (B, n, C, H, W), backbone
    speed: torch.Tensor | None = None  # (B, n+F, Ds), backbone
    audio: Any = None  # what the sites' audio modules read, backbone
    site_plan: Mapping[str, SitePlan] = field(default_factory=lambda: EVERY_SITE)
    recorded_motion: dict | None = None  # site -> features, ReferenceNet
    motion_source: str = "block_output"
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

    def site(self, name: str, h: torch.Tensor, kind: str, level: int,
             module: MotionModule | None, audio_module: nn.Module | None = None) -> torch.Tensor:
        """A temporal-module site: after each (resnet, transformer) pair of a level."""
        if self.recorded_motion is not None:
            self._record_motion(name, h, kind)
        plan = self.site_plan[kind]
        if audio_module is not None and self.audio is not None:
            h = self._maybe_checkpoint(lambda x: audio_module(x, self.audio, level, plan.audio_scales), h)
        if module is None or not plan.temporal:
            return h
        motion = self.motion.get(name) if (self.motion and plan.motion_frames) else None
        return self._maybe_checkpoint(lambda x: module(x, self.num_frames, motion, self.speed), h)

    def _record_motion(self, name: str, h: torch.Tensor, kind: str) -> None:
        b, images = self.call.batch_size, self.call.images_per_item
        if self.motion_source == "block_output":
            self.recorded_motion[name] = h.unflatten(0, (b, images))[:, 1:]  # (B, n, C, H, W)
        elif kind != "plain":
            tokens = self.call.recorded_all[attention_of_site(name)][:, 1:]  # (B, n, H*W, C)
            height, width = h.shape[-2:]
            self.recorded_motion[name] = tokens.unflatten(2, (height, width)).permute(0, 1, 4, 2, 3)


class _DownLevel(nn.Module):
    def __init__(self, index, cfg, in_ch, out_ch, attention, downsample, temporal, speed_dim, audio_module):
        super().__init__()
        n = cfg.layers_per_block
        self.prefix, self.level, self.kind = f"down_blocks.{index}", index, "attention" if attention else "plain"
        self.resnets = nn.ModuleList([_resnet(cfg, in_ch if j == 0 else out_ch, out_ch) for j in range(n)])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch, index) for _ in range(n)]) if attention else None
        sites = [SiteGeometry("down", self.kind, index, j, out_ch, in_ch if j == 0 else out_ch, out_ch)
                 for j in range(n)]
        self.audio_modules = _audio_modules(cfg, audio_module, sites) if attention else None
        self.motion_modules = _motion_modules(temporal, out_ch, n, speed_dim)
        self.downsamplers = (nn.ModuleList([Downsample2D(out_ch, use_conv=True, out_channels=out_ch,
                                                         padding=1, name="op")])
                             if downsample else None)

    def forward(self, h, run: _Pass):
        skips = []
        for j, resnet in enumerate(self.resnets):
            h = run.resnet(resnet, h)
            if self.attentions is not None:
                h = run.transformer(self.attentions[j], h)
            h = run.site(f"{self.prefix}.motion_modules.{j}", h, self.kind, self.level,
                         _item(self.motion_modules, j), _item(self.audio_modules, j))
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class _MidLevel(nn.Module):
    def __init__(self, cfg, ch, level, temporal, speed_dim, audio_module):
        super().__init__()
        self.level = level
        self.resnets = nn.ModuleList([_resnet(cfg, ch, ch), _resnet(cfg, ch, ch)])
        self.attentions = nn.ModuleList([_transformer(cfg, ch, level)])
        self.audio_modules = _audio_modules(cfg, audio_module, [SiteGeometry("mid", "mid", level, 0, ch, ch, ch)])
        self.motion_modules = _motion_modules(temporal, ch, 1, speed_dim)

    def forward(self, h, run: _Pass):
        h = run.resnet(self.resnets[0], h)
        h = run.transformer(self.attentions[0], h)
        h = run.site("mid_block.motion_modules.0", h, "mid", self.level,
                     _item(self.motion_modules, 0), _item(self.audio_modules, 0))
        return run.resnet(self.resnets[1], h)


class _UpLevel(nn.Module):
    def __init__(self, index, level, cfg, prev_ch, out_ch, skip_ch, attention, upsample, temporal,
                 speed_dim, audio_module):
        super().__init__()
        n = cfg.layers_per_block + 1  # one more resnet than the down path: it eats the extra skip
        self.prefix, self.level, self.kind = f"up_blocks.{index}", level, "attention" if attention else "plain"
        self.resnets = nn.ModuleList([
            _resnet(cfg, (prev_ch if j == 0 else out_ch) + (skip_ch if j == n - 1 else out_ch), out_ch)
            for j in range(n)
        ])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch, level) for _ in range(n)]) if attention else None
        sites = [SiteGeometry("up", self.kind, level, j, out_ch, out_ch, skip_ch) for j in range(n)]
        self.audio_modules = _audio_modules(cfg, audio_module, sites) if attention else None
        self.motion_modules = _motion_modules(temporal, out_ch, n, speed_dim)
        self.upsamplers = (nn.ModuleList([Upsample2D(out_ch, use_conv=True, out_channels=out_ch)])
                           if upsample else None)

    def forward(self, h, skips: list, run: _Pass, upsample_size=None):
        for j, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips.pop()], dim=1)
            h = run.resnet(resnet, h)
            if self.attentions is not None:
                h = run.transformer(self.attentions[j], h)
            h = run.site(f"{self.prefix}.motion_modules.{j}", h, self.kind, self.level,
                         _item(self.motion_modules, j), _item(self.audio_modules, j))
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)
        return h


def _item(modules: nn.ModuleList | None, index: int):
    return modules[index] if modules is not None else None


class UNet(nn.Module):
    """SD1.5 UNet layout; `temporal` adds the motion modules (backbone only), `audio_module`
    the audio modules a family puts at the temporal sites."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig | None = None,
                 speed_dim: int | None = None, audio_module: AudioModuleFactory | None = None,
                 context_scale: float = 1.0):
        super().__init__()
        self.config = cfg
        ch = cfg.block_out_channels
        levels = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList([
            _DownLevel(i, cfg, ch[i - 1] if i else ch[0], ch[i], cfg.attention_levels[i],
                       i < levels - 1, temporal, speed_dim, audio_module)
            for i in range(levels)
        ])
        self.mid_block = _MidLevel(cfg, ch[-1], levels - 1, temporal, speed_dim, audio_module)
        rev_ch = ch[::-1]
        rev_attn = cfg.attention_levels[::-1]
        self.up_blocks = nn.ModuleList([
            _UpLevel(i, levels - 1 - i, cfg, rev_ch[i - 1] if i else rev_ch[0], rev_ch[i],
                     rev_ch[min(i + 1, levels - 1)], rev_attn[i], i < levels - 1, temporal,
                     speed_dim, audio_module)
            for i in range(levels)
        ])
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False
        for name, module in self.named_modules():
            if ".attentions." not in name:
                continue  # audio modules keep diffusers' own processors
            if name.endswith(".attn1"):
                module.set_processor(ReferenceAttentionProcessor(name))
            elif name.endswith(".attn2"):
                module.set_processor(ContextAttentionProcessor(context_scale))

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

    def _run_levels(self, h: torch.Tensor, run: _Pass, with_output: bool) -> torch.Tensor:
        skips = [h]
        for level in self.down_blocks:
            h, level_skips = level(h, run)
            skips.extend(level_skips)
        h = self.mid_block(h, run)
        for level in self.up_blocks:
            n = len(level.resnets)
            level_skips = skips[-n:]
            del skips[-n:]
            upsample_size = skips[-1].shape[-2:] if skips else None
            h = level(h, level_skips, run, upsample_size)
        if not with_output:
            return h
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


class ReferenceNet(UNet):
    """Spatial UNet over the reference image and the motion frames (paper §3.2 "ReferenceNet")."""

    def __init__(self, cfg: UNetConfig, options: ReferenceOptions | None = None):
        super().__init__(cfg, temporal=None)
        self.options = options or ReferenceOptions()

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None = None) -> ReferenceFeatures:
        """latents: (B, 1+n, 4, H, W) = [reference, motion_1..motion_n] per item, VAE-scaled;
        context: (B*(1+n), T, D) cross-attention tokens per image, or None.

        Without a context a net with cross-attention runs with a single all-zero token (EMO uses
        no text; with a zero token SD's cross-attention reduces to its output bias). Runs at
        timestep 0; the output layers are not run: only the recorded features are used.
        """
        b, images, c, h, w = latents.shape
        x = latents.reshape(b * images, c, h, w).to(self.conv_in.weight.dtype)
        temb = self._time_embedding(0, b * images, 1, x.dtype, x.device)
        if context is None and self.config.cross_attention_dim is not None:
            context = x.new_zeros(b * images, 1, self.config.cross_attention_dim)
        source = self.options.motion_source
        call = AttentionCall(mode="write", batch_size=b, images_per_item=images,
                             record_all_images=source == "attention_input")
        run = _Pass(temb=temb, context=None if context is None else context.to(x.dtype), call=call,
                    recorded_motion={}, motion_source=source, checkpointing=self.gradient_checkpointing)
        self._run_levels(self.conv_in(x), run, with_output=False)
        features = ReferenceFeatures(attention=call.recorded, motion=run.recorded_motion)
        if self.options.feature_dtype is not None:
            features = features.to(dtype=self.options.feature_dtype).to(dtype=x.dtype)
        return features


class Backbone(UNet):
    """The denoising UNet with reference-, cross- and temporal attention (paper §3.2)."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig, speed_dim: int | None,
                 options: BackboneOptions | None = None):
        options = options or BackboneOptions()
        super().__init__(cfg, temporal=temporal, speed_dim=speed_dim, audio_module=options.audio_module,
                         context_scale=options.context_scale)
        self.options = options

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        context: torch.Tensor,
        *,
        reference: ReferenceFeatures | None = None,
        reference_rows=None,
        speed: torch.Tensor | None = None,
        face_features: torch.Tensor | None = None,
        audio=None,
    ) -> torch.Tensor:
        """Predict the noise (or v) of a clip.

        sample: (B, 4, F, H, W) noisy latents; timestep: scalar or (B,);
        context: what `attn2` attends to, (B or 1, F, K, D) per frame or (B or 1, K, D) per video
        (EMO: the audio tokens, zeros = no audio);
        reference: ReferenceNet output for 1 or B items; reference_rows: which rows attend to the
        reference (the others attend to themselves only: guidance's unconditional branch), a
        tuple of B bools (fixed per call: no host sync) or a (B,) bool tensor (per-sample drops in
        training); None = all; speed: (1 or B, n+F, Ds) speed embedding for the motion frames and
        the clip; face_features: (1 or B, C0, H, W) or (1 or B, C0, F, H, W) face-locator output;
        audio: what the sites' audio modules read (a family's object), None = skip them.
        Returns (B, 4, F, H, W).
        """
        b, c, f, h, w = sample.shape
        dtype = self.conv_in.weight.dtype
        x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(dtype)
        temb = self._time_embedding(timestep, b, f, dtype, x.device)
        context = context.to(dtype)
        if context.ndim == 4:  # per frame: (B, F, K, D) -> (B*F, K, D)
            context = context.expand(b, -1, -1, -1).reshape(b * f, *context.shape[2:])
        else:  # per video: (B, K, D) -> every frame of its video
            context = context.expand(b, -1, -1).repeat_interleave(f, dim=0)
        call = AttentionCall(mode="read", batch_size=b, reference=reference, reference_rows=reference_rows,
                             tile_reference_items=self.options.tile_reference_items)
        run = _Pass(temb=temb, context=context, call=call, num_frames=f,
                    motion=reference.motion if reference is not None else None, speed=speed, audio=audio,
                    site_plan=self.options.site_plan, checkpointing=self.gradient_checkpointing)
        x = self.conv_in(x)
        if face_features is not None:
            if face_features.ndim == 5:  # (B, C0, F, H, W): one map per frame
                face_features = face_features.expand(b, -1, -1, -1, -1).permute(0, 2, 1, 3, 4).flatten(0, 1)
            else:
                face_features = face_features.expand(b, -1, -1, -1).repeat_interleave(f, dim=0)
            x = x + face_features.to(dtype)
        out = self._run_levels(x, run, with_output=True)
        return out.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)
