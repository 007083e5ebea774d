"""The EchoMimic family: how an EchoMimic model is built, conditioned and sampled.

EchoMimic (antgroup/echomimic, Apache-2.0) has the EMO lineage's networks (SD1.5 ReferenceNet +
backbone + AnimateDiff motion modules + a face locator); where it differs, this module says so:
- audio: whisper-tiny features (the input embedding and every encoder block, 50 Hz), ten feature
  frames around each video frame as 10*(L+1) tokens of width 384, attended to directly by every
  spatial `attn2`, whose output is scaled by 3 (`audio.py`, `whisper.py`); no audio projection;
- identity: the ReferenceNet runs once, at timestep 0, on the reference alone and has no
  cross-attention; its features are rounded to fp16;
- face: a 1-channel face-box mask; the unconditional guidance row gets zero face features;
- sampling: no motion frames; the whole video is denoised at once in closed-loop windows of
  12 frames overlapping by 3, shifted by 2 frames per step, averaged per frame
  (`emo.pipeline.ContextWindows`); initial noise clamped to +-1.5; DDIM with zero-SNR
  v-prediction and trailing spacing;
- no speed layers.
The parity fixtures (shared/fixtures/echomimic_parity, README) document each of these.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ... import audio as audio_lib
from ...models.unet import BackboneOptions, ReferenceOptions
from ...windows import ContextWindows
from ..base import ModelFamily, VideoConditioning
from .audio import SAMPLE_RATE, EchoMimicAudio, encode_echomimic_audio
from .options import EchoMimicOptions
from .whisper import WhisperDims, WhisperEncoder


@dataclasses.dataclass
class WhisperAudioFeatures(audio_lib.AudioFeatures):
    """Audio features of an EchoMimic model: `features` are the whisper features at 50 Hz
    [n, L+1, D] and `indices` [F, 10] the feature frames each video frame gathers."""

    indices: torch.Tensor = None

    @property
    def num_frames(self) -> int:
        return int(self.indices.shape[0])

    def tokens(self, frames) -> torch.Tensor:
        """[len(frames), 10(L+1), D] token sets of the given video frames."""
        return EchoMimicAudio(self.features, self.indices, self.fps, 0).tokens(frames)


class EchoMimicFamily(ModelFamily):
    name = "echomimic"
    description = "EchoMimic"

    def options(self, config) -> EchoMimicOptions:
        return EchoMimicOptions.from_dict(config.family_options)

    def reference_unet_config(self, config):
        return dataclasses.replace(config.unet, cross_attention_dim=None)  # no attn2/norm2 at all

    def reference_options(self, config) -> ReferenceOptions:
        fp16 = self.options(config).reference_bank_fp16
        return ReferenceOptions(motion_source="block_output", feature_dtype=torch.float16 if fp16 else None)

    def backbone_options(self, config) -> BackboneOptions:
        return BackboneOptions(context_scale=self.options(config).audio_attention_scale)

    def audio_token_dim(self, config) -> int:
        return config.unet.cross_attention_dim

    def audio_encoder(self, config) -> nn.Module:
        return WhisperEncoder(WhisperDims(**self.options(config).whisper))

    def audio_projection(self, config) -> nn.Module | None:
        return None  # the whisper tokens are attn2's context as they are

    def encode_audio(self, model, waveform, sample_rate, fps, *, start_seconds=0.0, duration_seconds=None,
                     progress=None) -> WhisperAudioFeatures:
        channels_first = audio_lib.as_channels_first(waveform, "encode_audio")
        trimmed = audio_lib.trim(channels_first, int(sample_rate), start_seconds, duration_seconds)
        trimmed = trimmed.detach().to(device="cpu", dtype=torch.float32).contiguous()
        mono_16k = audio_lib.resample(audio_lib.to_mono(trimmed), int(sample_rate), SAMPLE_RATE)
        encoded = encode_echomimic_audio(model.audio_encoder, mono_16k, fps, progress=progress)
        return WhisperAudioFeatures(features=encoded.features, fps=float(fps), waveform=trimmed,
                                    sample_rate=int(sample_rate), indices=encoded.indices)

    def clip_tokens(self, model, audio, frame_ids) -> torch.Tensor:
        if not isinstance(audio, WhisperAudioFeatures):
            raise ValueError("EchoMimic models need audio encoded by their own whisper encoder; encode the audio "
                             "with the same model (EMO Audio Encode with this model connected).")
        return audio.tokens(frame_ids)[None].to(model.device, model.dtype)

    def clip_schedule(self, config) -> ContextWindows:
        options = self.options(config)
        acc = options.variant == "acc"
        return ContextWindows(closed_loop=True, shift_per_step=options.window_shift, mean_without_guidance=acc,
                              velocity_round_trip=acc, noise_clamp=options.noise_clamp)

    def video_conditioning(self, model, *, mask, face_embedding, motion_frames, region_scales, use_cfg,
                           latent_hw=None) -> VideoConditioning:
        self.check_face_embedding(face_embedding)
        face_features = model.face_locator(mask[None, None].to(model.device, model.dtype))
        if use_cfg:  # the unconditional row gets zero face features, not face_locator(0)
            face_features = torch.cat([torch.zeros_like(face_features), face_features])
        return VideoConditioning(face_features=face_features, context="audio")
