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

With a `HalloConfig` the same classes run Hallo's weights (see `emo.config.HalloConfig`): the
backbone gains Hallo's regional `audio_modules` and `attn2` attends to face tokens instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import HalloConfig, TemporalConfig, UNetConfig
from .reference_attention import (
    AttentionCall,
    AudioAttentionProcessor,
    ReferenceAttentionProcessor,
    ReferenceFeatures,
)
from .region_audio import RegionAudioModule
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


def _audio_modules(cfg: UNetConfig, hallo: HalloConfig | None, ch: int, widths: list[int]):
    """Hallo's regional audio modules, one per layer. Hallo builds each with an inner width of
    heads * (w // heads) for a w that is not always the layer's own width (down levels: the
    layer's input width; up levels: the skip width), so the widths are passed in."""
    if hallo is None:
        return None
    heads = cfg.num_attention_heads
    return nn.ModuleList([
        RegionAudioModule(ch, heads * (w // heads), heads, hallo.audio_attention_dim, cfg.norm_num_groups)
        for w in widths
    ])


def attention_of_site(site: str) -> str:
    """`down_blocks.1.motion_modules.0` -> the `attn1` of the transformer just before it."""
    return site.replace("motion_modules", "attentions") + ".transformer_blocks.0.attn1"


@dataclass
class _Region:
    """Hallo's regional audio inputs for one call."""

    tokens: torch.Tensor  # (N, K, Da) audio tokens per frame
    masks: list  # per resolution level: [full, face, lip], each (N or 1, H*W)
    scales: tuple | None  # (pose, face, lip) weights


# What a temporal-module site does, per level kind:
# (run the temporal module, prepend motion frames, weight Hallo's audio regions)
_EMO_BEHAVIOUR = {"attention": (True, True, True), "plain": (True, True, True), "mid": (True, True, True)}
_HALLO_BEHAVIOUR = {
    # Hallo's inference leaves the UNet in train mode with gradient checkpointing on, which takes
    # its checkpoint branch: plain levels run resnets only; attention levels use motion frames.
    "train": {"attention": (True, True, True), "plain": (False, False, False), "mid": (True, True, True)},
    "eval": {"attention": (True, False, False), "plain": (True, False, False), "mid": (True, True, True)},
}


@dataclass
class _Run:
    """State of one UNet forward, handed to every level."""

    temb: torch.Tensor  # (N, D) one row per image
    context: torch.Tensor  # (N, K, D) cross-attention tokens per image
    call: AttentionCall
    num_frames: int = 1
    motion: dict | None = None  # site -> (B, n, C, H, W), backbone
    speed: torch.Tensor | None = None  # (B, n+F, Ds), backbone
    region: _Region | None = None  # Hallo audio, backbone
    behaviour: dict | None = None
    recorded_motion: dict | None = None  # site -> features, ReferenceNet
    motion_from_attention: bool = False  # ReferenceNet: motion features = attn1 inputs (Hallo)
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
             module: MotionModule | None, audio_module: RegionAudioModule | None = None) -> torch.Tensor:
        """A temporal-module site: after each (resnet, transformer) pair of a level."""
        if self.recorded_motion is not None:
            self._record_motion(name, h, kind)
        run_temporal, use_motion, use_scales = (self.behaviour or _EMO_BEHAVIOUR)[kind]
        if audio_module is not None and self.region is not None:
            region = self.region
            scales = region.scales if use_scales else None
            h = self._maybe_checkpoint(
                lambda x: audio_module(x, region.tokens, region.masks[level], scales), h)
        if module is None or not run_temporal:
            return h
        motion = self.motion.get(name) if (self.motion and use_motion) else None
        return self._maybe_checkpoint(lambda x: module(x, self.num_frames, motion, self.speed), h)

    def _record_motion(self, name: str, h: torch.Tensor, kind: str) -> None:
        b, images = self.call.batch_size, self.call.images_per_item
        if not self.motion_from_attention:
            self.recorded_motion[name] = h.unflatten(0, (b, images))[:, 1:]  # (B, n, C, H, W)
        elif kind != "plain":
            tokens = self.call.recorded_all[attention_of_site(name)][:, 1:]  # (B, n, H*W, C)
            height, width = h.shape[-2:]
            self.recorded_motion[name] = tokens.unflatten(2, (height, width)).permute(0, 1, 4, 2, 3)


class _DownLevel(nn.Module):
    def __init__(self, index, cfg, in_ch, out_ch, attention, downsample, temporal, speed_dim, hallo):
        super().__init__()
        n = cfg.layers_per_block
        self.prefix, self.level, self.kind = f"down_blocks.{index}", index, "attention" if attention else "plain"
        self.resnets = nn.ModuleList([_resnet(cfg, in_ch if j == 0 else out_ch, out_ch) for j in range(n)])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch) for _ in range(n)]) if attention else None
        self.audio_modules = (_audio_modules(cfg, hallo, out_ch, [in_ch] + [out_ch] * (n - 1))
                              if attention else None)
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
            h = run.site(f"{self.prefix}.motion_modules.{j}", h, self.kind, self.level,
                         _item(self.motion_modules, j), _item(self.audio_modules, j))
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class _MidLevel(nn.Module):
    def __init__(self, cfg, ch, level, temporal, speed_dim, hallo):
        super().__init__()
        self.level = level
        self.resnets = nn.ModuleList([_resnet(cfg, ch, ch), _resnet(cfg, ch, ch)])
        self.attentions = nn.ModuleList([_transformer(cfg, ch)])
        self.audio_modules = _audio_modules(cfg, hallo, ch, [ch])
        self.motion_modules = _motion_modules(temporal, ch, 1, speed_dim)

    def forward(self, h, run: _Run):
        h = run.resnet(self.resnets[0], h)
        h = run.transformer(self.attentions[0], h)
        h = run.site("mid_block.motion_modules.0", h, "mid", self.level,
                     _item(self.motion_modules, 0), _item(self.audio_modules, 0))
        return run.resnet(self.resnets[1], h)


class _UpLevel(nn.Module):
    def __init__(self, index, level, cfg, prev_ch, out_ch, skip_ch, attention, upsample, temporal,
                 speed_dim, hallo):
        super().__init__()
        n = cfg.layers_per_block + 1  # one more resnet than the down path: it eats the extra skip
        self.prefix, self.level, self.kind = f"up_blocks.{index}", level, "attention" if attention else "plain"
        self.resnets = nn.ModuleList([
            _resnet(cfg, (prev_ch if j == 0 else out_ch) + (skip_ch if j == n - 1 else out_ch), out_ch)
            for j in range(n)
        ])
        self.attentions = nn.ModuleList([_transformer(cfg, out_ch) for _ in range(n)]) if attention else None
        self.audio_modules = _audio_modules(cfg, hallo, out_ch, [skip_ch] * n) if attention else None
        self.motion_modules = _motion_modules(temporal, out_ch, n, speed_dim)
        self.upsamplers = (nn.ModuleList([Upsample2D(out_ch, use_conv=True, out_channels=out_ch)])
                           if upsample else None)

    def forward(self, h, skips: list, run: _Run, upsample_size=None):
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


class EMOUNet(nn.Module):
    """SD1.5 UNet layout; `temporal` adds the motion modules (backbone only), `hallo` Hallo's
    audio modules."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig | None = None,
                 speed_dim: int | None = None, hallo: HalloConfig | None = None):
        super().__init__()
        self.config = cfg
        self.hallo = hallo
        ch = cfg.block_out_channels
        levels = len(ch)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList([
            _DownLevel(i, cfg, ch[i - 1] if i else ch[0], ch[i], cfg.attention_levels[i],
                       i < levels - 1, temporal, speed_dim, hallo)
            for i in range(levels)
        ])
        self.mid_block = _MidLevel(cfg, ch[-1], levels - 1, temporal, speed_dim, hallo)
        rev_ch = ch[::-1]
        rev_attn = cfg.attention_levels[::-1]
        self.up_blocks = nn.ModuleList([
            _UpLevel(i, levels - 1 - i, cfg, rev_ch[i - 1] if i else rev_ch[0], rev_ch[i],
                     rev_ch[min(i + 1, levels - 1)], rev_attn[i], i < levels - 1, temporal,
                     speed_dim, hallo)
            for i in range(levels)
        ])
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False
        for name, module in self.named_modules():
            if ".attentions." not in name:
                continue  # the audio modules keep diffusers' own processors
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
        for level in self.up_blocks:
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

    def __init__(self, cfg: UNetConfig, hallo: HalloConfig | None = None):
        super().__init__(cfg, temporal=None)
        # EMO takes motion-frame features at each temporal site from the block output; Hallo
        # takes the attn1 inputs of the transformer before it, rounded to fp16 like all its
        # reference features.
        self.motion_from_attention = hallo is not None
        self.round_to_fp16 = hallo is not None and hallo.reference_bank_fp16

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None = None) -> ReferenceFeatures:
        """latents: (B, 1+n, 4, H, W) = [reference, motion_1..motion_n] per item, VAE-scaled;
        context: (B*(1+n), T, D) cross-attention tokens per image (Hallo's face tokens).

        Without a context (EMO) it runs with a single all-zero token: EMO uses no text, and with
        a zero token SD's cross-attention reduces to its output bias. Runs at timestep 0; the
        output layers are not run: only the recorded features are used.
        """
        b, images, c, h, w = latents.shape
        x = latents.reshape(b * images, c, h, w).to(self.conv_in.weight.dtype)
        temb = self._time_embedding(0, b * images, 1, x.dtype, x.device)
        if context is None:
            context = x.new_zeros(b * images, 1, self.config.cross_attention_dim)
        call = AttentionCall(mode="write", batch_size=b, images_per_item=images,
                             record_all_images=self.motion_from_attention)
        run = _Run(temb=temb, context=context.to(x.dtype), call=call, recorded_motion={},
                   motion_from_attention=self.motion_from_attention,
                   checkpointing=self.gradient_checkpointing)
        self._run_levels(self.conv_in(x), run, with_output=False)
        features = ReferenceFeatures(attention=call.recorded, motion=run.recorded_motion)
        if self.round_to_fp16:
            dtype = x.dtype
            features = features.to(dtype=torch.float16).to(dtype=dtype)
        return features


class Backbone(EMOUNet):
    """The denoising UNet with reference-, audio- and temporal attention (paper §3.2)."""

    def __init__(self, cfg: UNetConfig, temporal: TemporalConfig, speed_dim: int,
                 hallo: HalloConfig | None = None):
        super().__init__(cfg, temporal=temporal, speed_dim=speed_dim, hallo=hallo)
        self.behaviour = _HALLO_BEHAVIOUR[hallo.inference_path] if hallo else _EMO_BEHAVIOUR

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
        context: torch.Tensor | None = None,
        region_masks: dict | None = None,
        region_scales=None,
    ) -> torch.Tensor:
        """Predict the noise (or v) of a clip.

        sample: (B, 4, F, H, W) noisy latents; timestep: scalar or (B,);
        audio_tokens: (B or 1, F, K, Da) per-frame audio tokens (zeros = no audio);
        reference: ReferenceNet output for 1 or B items; reference_rows: (B,) bool, rows that
        attend to the reference (None = all); speed: (1 or B, n+F, Ds) speed embedding for the
        motion frames and the clip; face_features: (1 or B, C0, H, W) face-locator output.
        Hallo models also take context: (1 or B, T, D) face tokens for `attn2`;
        region_masks: {"full"|"face"|"lip": [per level (N or 1, h*w)]}; region_scales: 3 floats.
        Returns (B, 4, F, H, W).
        """
        b, c, f, h, w = sample.shape
        dtype = self.conv_in.weight.dtype
        x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(dtype)
        temb = self._time_embedding(timestep, b, f, dtype, x.device)
        tokens = audio_tokens.to(dtype).expand(b, -1, -1, -1).reshape(b * f, *audio_tokens.shape[2:])
        region = None
        if self.hallo is not None:
            if context is None or region_masks is None:
                raise ValueError("Backbone: a Hallo model needs `context` (face tokens) and `region_masks`.")
            masks = [[region_masks[k][level] for k in ("full", "face", "lip")]
                     for level in range(len(region_masks["full"]))]
            region = _Region(tokens=tokens, masks=masks, scales=region_scales)
            attn_context = context.to(dtype).expand(b, -1, -1).repeat_interleave(f, dim=0)
        else:
            attn_context = tokens
        call = AttentionCall(mode="read", batch_size=b, reference=reference,
                             reference_rows=reference_rows, tile_reference_items=self.hallo is not None)
        run = _Run(temb=temb, context=attn_context, call=call, num_frames=f,
                   motion=reference.motion if reference is not None else None,
                   speed=speed, region=region, behaviour=self.behaviour,
                   checkpointing=self.gradient_checkpointing)
        x = self.conv_in(x)
        if face_features is not None:
            if face_features.ndim == 5:  # (B, C0, F, H, W): one map per frame
                face_features = face_features.expand(b, -1, -1, -1, -1).permute(0, 2, 1, 3, 4).flatten(0, 1)
            else:
                face_features = face_features.expand(b, -1, -1, -1).repeat_interleave(f, dim=0)
            x = x + face_features.to(dtype)
        out = self._run_levels(x, run, with_output=True)
        return out.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)
