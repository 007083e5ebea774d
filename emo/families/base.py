"""What every model family provides, and the conditioning of one video.

A family is a `ModelFamily` subclass, registered in `emo.families.FAMILIES` under the name a
config's `family` field holds. The shared model (`emo.models.EMOModel`) asks it how to build the
networks; the pipeline (`emo.pipeline.EMOPipeline`) asks it for each video's conditioning; the
loaders ask it whether a file or folder is its own and how to convert it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from transformers import Wav2Vec2Config, Wav2Vec2Model

from .. import audio as audio_lib
from ..config import UNetConfig
from ..models.audio_projection import AudioProjection
from ..models.unet import BackboneOptions, ReferenceOptions

if TYPE_CHECKING:
    from ..config import EMOConfig
    from ..model import EMOModel


@dataclass
class VideoConditioning:
    """What a family makes of one video's inputs, for every clip of it.

    The pipeline runs, per clip: `model.reference_net(reference_images(...), context=
    reference_context)`, then the backbone with `context_of(tokens)` for `attn2`,
    `face_features`, and `audio_of(tokens)` for the sites' audio modules. Tokens are the clip's
    projected audio, (R, f, K, D) with R = 2 guidance rows (zeros first) or 1.
    """

    face_features: torch.Tensor  # (R, C0, h, w) face-locator output per guidance row
    reference_context: torch.Tensor | None = None  # (items*(1+n), T, D) for the ReferenceNet
    reference_items: int = 1  # how often [reference, motion frames] is repeated in its batch
    # attn2's context: "audio" (the clip's audio tokens) or a fixed tensor (R, T, D) per video.
    context: Any = "audio"
    # Builds what the backbone's audio modules read from the clip's audio tokens (None: no
    # audio modules); the family's own object.
    audio_inputs: Any = None
    # The guidance rows must go through the backbone in one batch (a family whose reference
    # layout is only defined for the batched call).
    batched_guidance_only: bool = False
    extra: dict = field(default_factory=dict)

    def context_of(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens if isinstance(self.context, str) else self.context

    def audio_of(self, tokens: torch.Tensor, silent_rows: tuple | None = None):
        """What the audio modules read for these (R, F, K, D) tokens; `silent_rows`: per row,
        True where its tokens are all zero (guidance's unconditional row), which lets a module
        skip attending to them."""
        return None if self.audio_inputs is None else self.audio_inputs(tokens, silent_rows)

    def reference_images(self, ref_latent: torch.Tensor, motion_latents: torch.Tensor) -> torch.Tensor:
        """(1, 4, h, w) and (1, n, 4, h, w) -> the ReferenceNet's batch (items, 1+n, 4, h, w)."""
        images = torch.cat([ref_latent[:, None], motion_latents], dim=1)
        return images.repeat(self.reference_items, 1, 1, 1, 1)


class ModelFamily:
    """Base class of the families (see emo/families/emo.py for the paper's, which reads as a
    template). Defaults: no family options, shared blocks as EMO builds them, no extra
    networks, no face embedding."""

    name = ""
    description = ""

    # ---- options and architecture ----------------------------------------------------------------
    def options(self, config: "EMOConfig") -> Any:
        """The family's own options, parsed and checked from `config.family_options`."""
        if config.family_options:
            raise ValueError(f"{self.description} models take no family options, got "
                             f"{sorted(config.family_options)}.")
        return None

    def reference_options(self, config: "EMOConfig") -> ReferenceOptions:
        return ReferenceOptions()

    def reference_unet_config(self, config: "EMOConfig") -> UNetConfig:
        """The ReferenceNet's UNet config (default: the backbone's)."""
        return config.unet

    def backbone_options(self, config: "EMOConfig") -> BackboneOptions:
        return BackboneOptions()

    def audio_token_dim(self, config: "EMOConfig") -> int:
        """Width of the audio tokens the audio projection makes (EMO: the cross-attention's)."""
        return config.unet.cross_attention_dim

    def extra_modules(self, config: "EMOConfig") -> dict[str, nn.Module]:
        """Networks of this family beyond the shared ones, by state-dict prefix."""
        return {}

    def audio_encoder(self, config: "EMOConfig") -> nn.Module:
        """The pretrained speech encoder (`audio_encoder.*`): wav2vec2 by default."""
        return Wav2Vec2Model(Wav2Vec2Config(**config.audio.wav2vec2))

    def audio_projection(self, config: "EMOConfig") -> nn.Module | None:
        """Encoder features of a frame window -> audio tokens (`audio_projection.*`), or None
        when the encoder's features are the tokens."""
        return AudioProjection(config.audio, context_dim=self.audio_token_dim(config))

    # ---- audio ----------------------------------------------------------------------------------
    def encode_audio(self, model: "EMOModel", waveform: torch.Tensor, sample_rate: int, fps: float, *,
                     start_seconds: float = 0.0, duration_seconds: float | None = None,
                     progress=None) -> audio_lib.AudioFeatures:
        """Any waveform -> the family's per-video-frame audio features (default: wav2vec2 hidden
        states of all layers, interpolated at the video frames)."""
        return audio_lib.encode_audio(model.audio_encoder, waveform, sample_rate, fps, start_seconds=start_seconds,
                                      duration_seconds=duration_seconds, progress=progress)

    def clip_tokens(self, model: "EMOModel", audio: audio_lib.AudioFeatures, frame_ids: torch.Tensor
                    ) -> torch.Tensor:
        """The audio tokens of the video frames `frame_ids`: (1, f, K, D) on the model's device
        (default: each frame's ±m window of features through the audio projection)."""
        windows = audio_lib.window(audio.features, frame_ids, model.config.audio.window_radius)
        return model.audio_projection(windows[None].to(model.device, model.dtype))

    def clip_schedule(self, config: "EMOConfig"):
        """How the video is cut: None for clips chained through motion frames (the paper), or
        an `emo.windows.ContextWindows` for the whole video denoised in sliding windows."""
        return None

    # ---- inference ---------------------------------------------------------------------------------
    def first_motion_latents(self, config: "EMOConfig", ref_latent: torch.Tensor, n: int) -> torch.Tensor:
        """The first clip's n motion-frame latents (1, n, 4, h, w): zeros (EMO) or copies of the
        reference, as the checkpoint's defaults say."""
        if config.defaults.first_motion_frames == "reference":
            return ref_latent[:, None].repeat(1, n, 1, 1, 1)
        return ref_latent.new_zeros(1, n, *ref_latent.shape[1:])

    def motion_pixels(self, config: "EMOConfig", pixels: torch.Tensor, mask: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor | None:
        """What the motion frames' pixels (k, 3, H, W) in 0..1 become before the VAE encodes them
        (mask: the (H, W) face region), or None to encode them unchanged (the default; Hallo2
        masks them at random outside the face)."""
        return None

    def video_conditioning(self, model: "EMOModel", *, mask: torch.Tensor, face_embedding,
                           motion_frames: int, region_scales, use_cfg: bool,
                           latent_hw: tuple[int, int] | None = None) -> VideoConditioning:
        """The conditioning of one video: mask (size, size) in 0..1 at the output resolution;
        face_embedding: the portrait's identity embedding (families that take one) or None;
        motion_frames: n; region_scales: (pose, face, lip) audio weights (families with regional
        audio); use_cfg: two guidance rows [uncond, cond], else one; latent_hw: the latent size."""
        raise NotImplementedError(f"{type(self).__name__} does not define its video conditioning")

    def portrait_conditioning(self, model: "EMOModel", reference: torch.Tensor, face_embedding):
        """What `video_conditioning` receives as `face_embedding` for the square reference
        (size, size, 3) in 0..1 the video is made of (default: the caller's embedding, unchanged).
        A family that reads more from the portrait (Hallo: identity and landmark masks) makes it here."""
        return face_embedding

    def check_face_embedding(self, face_embedding) -> None:
        if face_embedding is not None:
            raise ValueError(f"{self.description} models take no face embedding; leave it out.")
