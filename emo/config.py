"""Architecture configs of the EMO model, with the `tiny` and `sd15` presets.

Every number that fixes a tensor shape lives here, with a note of where it comes from. A config
round-trips through JSON (it is stored in each checkpoint's metadata), so a checkpoint always
rebuilds the exact model that wrote it. Per-run choices (steps, guidance, seed, ...) are not
here: see `emo.pipeline.GenerationSettings`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "demo", "sd15")


@dataclass
class UNetConfig:
    """An SD1.5-shaped UNet (shared by the ReferenceNet and the backbone).

    The sd15 values are those of runwayml's `unet/config.json` (shared/fixtures/weight_keys/
    sd15_unet_config.json). Level i has cross-attention transformer blocks when
    `attention_levels[i]` is true (SD1.5: CrossAttnDownBlock2D x3 then DownBlock2D; the up path
    mirrors it).
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    # SD1.5's config calls this `attention_head_dim` but uses it as the number of heads: one
    # count for every level, or one per level (down order; the up path mirrors it, the middle
    # uses the last), as some checkpoints' configs give it.
    num_attention_heads: int | tuple[int, ...] = 8
    # Width of the cross-attention context. SD1.5 attends to 768-wide CLIP text tokens; EMO has
    # no text, so the same layer (attn2) becomes the audio-attention and the audio tokens are
    # projected to this width (see emo/models/audio_projection.py). None: the transformer
    # blocks have no cross-attention at all (a ReferenceNet built without `attn2`).
    cross_attention_dim: int | None = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        levels = len(self.block_out_channels)
        if len(self.attention_levels) != levels:
            raise ValueError(
                f"UNetConfig: block_out_channels has {levels} levels but "
                f"attention_levels has {len(self.attention_levels)}; give one flag per level."
            )
        if isinstance(self.num_attention_heads, (list, tuple)):
            self.num_attention_heads = tuple(int(h) for h in self.num_attention_heads)
            if len(self.num_attention_heads) != levels:
                raise ValueError(
                    f"UNetConfig: num_attention_heads lists {len(self.num_attention_heads)} head counts "
                    f"for {levels} levels; give one count, or one per level."
                )
        if self.layers_per_block < 1:
            raise ValueError(f"UNetConfig: layers_per_block must be >= 1, got {self.layers_per_block}.")
        for level, c in enumerate(self.block_out_channels):
            heads = self.heads_at(level)
            if heads < 1 or c % self.norm_num_groups or c % heads:
                raise ValueError(
                    f"UNetConfig: channel count {c} of level {level} must be divisible by "
                    f"norm_num_groups={self.norm_num_groups} and its {heads} attention heads."
                )

    def heads_at(self, level: int) -> int:
        """Attention heads of the transformers at resolution level `level` (0 = the latent's)."""
        heads = self.num_attention_heads
        return heads[level] if isinstance(heads, tuple) else heads

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4


@dataclass
class TemporalConfig:
    """AnimateDiff-style temporal modules (values of mm_sd_v15_v2: 8 heads, one transformer
    block of two temporal self-attentions, sinusoidal positions for 32 frames, GroupNorm with
    32 groups). EMO's speed layers live inside them (cross-attention to the speed embedding)."""

    num_attention_heads: int = 8
    num_transformer_blocks: int = 1
    # Length of the stored sinusoidal table (AnimateDiff v2: 32). Longer sequences
    # (motion frames + clip) extend the table with the same formula.
    max_frames: int = 32
    norm_num_groups: int = 32
    ff_mult: int = 4


@dataclass
class AudioConfig:
    """wav2vec2 encoder + EMO's per-frame audio tokens.

    EMO stacks the features of all wav2vec2 layers for each video frame and concatenates the
    ±m neighbouring frames (m = 2, paper §3.2 "Audio Layers"). A small MLP turns that window
    into `num_tokens` tokens of the UNet's cross-attention width (the shape Hallo uses too).
    """

    wav2vec2: dict[str, Any] = field(default_factory=dict)
    window_radius: int = 2
    num_tokens: int = 32
    intermediate_dim: int = 512

    @property
    def num_layers(self) -> int:
        return int(self.wav2vec2["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.wav2vec2["hidden_size"])


@dataclass
class SpeedConfig:
    """Head-rotation speed conditioning (paper §3.2 "Speed Layers").

    A speed s is encoded against buckets as tanh((s - c_i) / r_i * 3). The defaults cover the
    inference range the paper uses (speech 0.1-1.0, singing 1.0-1.3); `emo prepare` replaces
    them with centres/radii from the training data's statistics.
    """

    bucket_centers: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
    bucket_radii: tuple[float, ...] = (0.2,) * 9
    window_radius: int = 2
    hidden_dim: int = 512
    embed_dim: int = 768

    def __post_init__(self) -> None:
        self.bucket_centers = tuple(float(c) for c in self.bucket_centers)
        self.bucket_radii = tuple(float(r) for r in self.bucket_radii)
        if len(self.bucket_centers) != len(self.bucket_radii):
            raise ValueError(
                f"SpeedConfig: {len(self.bucket_centers)} bucket centres but "
                f"{len(self.bucket_radii)} radii; give one radius per centre."
            )
        if any(r <= 0 for r in self.bucket_radii):
            raise ValueError(f"SpeedConfig: bucket radii must be > 0, got {self.bucket_radii}.")


@dataclass
class FaceLocatorConfig:
    """Conv net that encodes the face-region mask (paper §3.2 "Face Locator"); three stride-2
    stages bring the pixel mask to latent resolution. Widths as AnimateAnyone/Hallo."""

    conditioning_channels: int = 1
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        if len(self.block_out_channels) != 4:
            raise ValueError(
                "FaceLocatorConfig: block_out_channels needs 4 widths (three stride-2 stages "
                f"reach the VAE's 1/8 resolution), got {self.block_out_channels}."
            )


@dataclass
class InferenceDefaults:
    """What the model was trained for; the pipeline uses these unless told otherwise
    (paper §4: 512x512, clips of f=12 frames, n=4 motion frames, DDIM 40 steps)."""

    size: int = 512
    fps: float = 25.0
    frames_per_clip: int = 12
    motion_frames: int = 4
    steps: int = 40
    guidance_scale: float = 3.5
    speed: float = 0.5
    # Motion frames of the first clip: "zeros" (EMO) or copies of the reference ("reference",
    # what Hallo's inference does).
    first_motion_frames: str = "zeros"
    # Weights of the (pose, face, lip) audio branches of families with regional audio
    # attention (Hallo); unused by the others.
    region_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Frames of the previous clip each clip re-makes to join it without a seam (clip-chained
    # sampling; see emo.pipeline.GenerationSettings.overlap_frames). 0: the paper's chaining
    # through the motion frames alone (checkpoints written before this field).
    overlap_frames: int = 0

    def __post_init__(self) -> None:
        self.region_scales = tuple(float(x) for x in self.region_scales)
        if not 0 <= self.overlap_frames <= self.frames_per_clip:
            raise ValueError(f"InferenceDefaults: overlap_frames must be between 0 and frames_per_clip "
                             f"({self.frames_per_clip}), got {self.overlap_frames}.")
        if self.first_motion_frames not in ("zeros", "reference"):
            raise ValueError(
                "InferenceDefaults: first_motion_frames must be 'zeros' or 'reference', "
                f"got {self.first_motion_frames!r}."
            )


def _sd15_scheduler() -> dict[str, Any]:
    # Stable Diffusion 1.5's noise schedule (scheduler_config.json), used with DDIM.
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


def _sd_vae(block_out_channels: tuple[int, ...], layers_per_block: int, groups: int) -> dict:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * len(block_out_channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(block_out_channels),
        "block_out_channels": list(block_out_channels),
        "layers_per_block": layers_per_block,
        "norm_num_groups": groups,
        "act_fn": "silu",
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def _wav2vec2(hidden: int, layers: int, heads: int, intermediate: int, conv_dim: int,
              pos_kernel: int, pos_groups: int) -> dict[str, Any]:
    # Strides multiply to 320 samples (20 ms at 16 kHz), as in wav2vec2-base; keeping them in
    # the tiny preset keeps the audio/frame alignment identical to the real model.
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "conv_dim": [conv_dim] * 7,
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_bias": False,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "num_conv_pos_embeddings": pos_kernel,
        "num_conv_pos_embedding_groups": pos_groups,
        # The encoder is frozen in EMO; SpecAugment masking would only add noise.
        "mask_time_prob": 0.0,
        "vocab_size": 32,
    }


@dataclass
class EMOConfig:
    """Everything that defines a model's weights: the shared blocks' configs, and which model
    family (`emo.families`) it belongs to with that family's own options."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    # None: no speed layers (families without EMO's speed control).
    speed: SpeedConfig | None = field(default_factory=SpeedConfig)
    face_locator: FaceLocatorConfig = field(default_factory=FaceLocatorConfig)
    vae: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=_sd15_scheduler)
    defaults: InferenceDefaults = field(default_factory=InferenceDefaults)
    name: str = "emo"
    family: str = "emo"  # a name in emo.families.FAMILIES
    # The family's own options (JSON values); the family parses and checks them.
    family_options: dict[str, Any] = field(default_factory=dict)

    # ----- presets -----------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "EMOConfig":
        if name == "sd15":
            return cls(
                unet=UNetConfig(),
                temporal=TemporalConfig(),
                audio=AudioConfig(wav2vec2=_wav2vec2(768, 12, 12, 3072, 512, 128, 16)),
                speed=SpeedConfig(),
                face_locator=FaceLocatorConfig(),
                vae=_sd_vae((128, 256, 512, 512), 2, 32),
                name="emo-sd15",
            )
        if name == "tiny":
            # Small enough for CPU tests; keeps every structural feature of sd15 (an attention
            # level and a plain level, skip connections, 8x VAE, wav2vec2's 320-sample hop).
            return cls(
                unet=UNetConfig(
                    block_out_channels=(32, 64),
                    attention_levels=(True, False),
                    layers_per_block=1,
                    num_attention_heads=2,
                    cross_attention_dim=32,
                    norm_num_groups=8,
                ),
                temporal=TemporalConfig(num_attention_heads=2, norm_num_groups=8),
                audio=AudioConfig(
                    wav2vec2=_wav2vec2(32, 2, 2, 64, 16, 16, 2),
                    num_tokens=4,
                    intermediate_dim=64,
                ),
                speed=SpeedConfig(
                    bucket_centers=(0.0, 0.4, 0.8, 1.2),
                    bucket_radii=(0.4,) * 4,
                    hidden_dim=32,
                    embed_dim=32,
                ),
                face_locator=FaceLocatorConfig(block_out_channels=(4, 8, 8, 16)),
                vae=_sd_vae((8, 8, 8, 8), 1, 4),
                defaults=InferenceDefaults(size=64, steps=4),
                name="emo-tiny",
            )
        if name == "demo":
            # The shipped demonstration model (emo/assets/emo-demo.safetensors, trained on
            # synthetic talkers by scripts/train_demo_model.sh). The tiny networks, but a wider
            # VAE: tiny's 8-channel one cannot reconstruct a face's mouth at 64 px, and this VAE
            # is trained (stage `vae`) because no small pretrained one exists offline. 20 DDIM
            # steps: 4 leave visible noise in the drawn faces.
            config = cls.preset("tiny")
            config.vae = _sd_vae((16, 32, 64, 64), 1, 8)
            # Zero terminal SNR with v-prediction (Lin et al. 2024, as Hallo): SD's schedule keeps
            # a little of the image at its last step, so a model trained on it takes the mean of
            # the starting noise for the picture's colour. On 8x8 latents that mean is large
            # (std 1/8), and each clip got its own colours: a jump at every seam, and faces off
            # the reference's colours.
            config.scheduler = {**_sd15_scheduler(), "prediction_type": "v_prediction",
                                "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
            config.defaults = InferenceDefaults(size=64, steps=20)
            config.name = "emo-demo"
            return config
        raise ValueError(f"EMOConfig.preset: unknown preset {name!r}; choose one of {PRESETS}.")

    # ----- JSON round trip ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EMOConfig":
        sections = {
            "unet": UNetConfig,
            "temporal": TemporalConfig,
            "audio": AudioConfig,
            "speed": SpeedConfig,
            "face_locator": FaceLocatorConfig,
            "defaults": InferenceDefaults,
        }
        data = dict(data)
        # Checkpoints written before model families were named kept Hallo's options in a
        # section of their own ("hallo": null for EMO models).
        if "hallo" in data:
            legacy = data.pop("hallo")
            if legacy is not None:
                data.setdefault("family", "hallo")
                data.setdefault("family_options", legacy)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"EMOConfig: unknown config sections {sorted(unknown)}; this checkpoint was "
                "probably written by a newer version of the pack - update it."
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections and value is not None:
                sub = sections[key]
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(value) - sub_known
                if bad:
                    raise ValueError(f"EMOConfig.{key}: unknown fields {sorted(bad)}.")
                kwargs[key] = sub(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "EMOConfig":
        return cls.from_dict(json.loads(text))

    @property
    def latent_scale(self) -> int:
        """Pixels per latent cell (8 for every SD VAE: one downsample per level but the last)."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)
