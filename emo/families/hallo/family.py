"""The Hallo family: how a Hallo model is built and conditioned.

Hallo (fudan-generative-vision/hallo, MIT) is EMO-like; where it differs, this module says so:
- its spatial cross-attention (`attn2`) attends to face tokens projected from a face-recognition
  embedding (`face_projection`), and the audio goes to separate audio modules at every
  temporal-module site (`audio_modules.py`): three branches masked by the background / face /
  lip regions and weighted by (pose, face, lip) scales;
- the motion-frame features a temporal module sees are the ReferenceNet's `attn1` inputs at the
  transformer just before it (EMO: the block output), and every reference feature is rounded to
  fp16 before use;
- its ReferenceNet batch is [reference, motion frames] once per guidance row with the face
  contexts alternating (u, c, u, c, ...), and its reader tiles that batch over the frames;
- its inference leaves the UNet in training mode: plain levels run resnets only (see
  `HalloOptions.inference_path`);
- no speed layers; first-clip motion frames are copies of the reference;
- what it reads from the portrait (`portrait_conditioning`): the raw ArcFace embedding of the
  largest face and landmark masks, from the user's face_analysis folder (`portrait.py`);
- its audio front end (`encode_audio`, `audio.py`): CNN features resampled to the frame count
  before the transformer, the audio padded to whole clips.
The parity fixtures (shared/fixtures/hallo_parity, README) document each of these.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...models.unet import BackboneOptions, ReferenceOptions, SitePlan
from ... import audio as audio_lib
from ..base import ModelFamily, VideoConditioning
from .audio_modules import RegionAudioInputs, mask_support, region_audio_module
from .face_projection import FaceEmbeddingProjection
from .hallo2 import lineage_audio_features, mask_motion_pixels
from .options import HalloOptions
from .portrait import HalloPortrait, box_level_masks, hallo_portrait

logger = logging.getLogger(__name__)

# What each kind of temporal-module site does on Hallo's two inference paths. In training mode
# with gradient checkpointing on (how Hallo's script leaves its UNet), plain levels take a
# branch that runs the resnets only, and attention levels use the motion frames and the scales.
SITE_PLANS = {
    "train": {"attention": SitePlan(), "plain": SitePlan(temporal=False, motion_frames=False, audio_scales=False),
              "mid": SitePlan()},
    "eval": {"attention": SitePlan(motion_frames=False, audio_scales=False),
             "plain": SitePlan(motion_frames=False, audio_scales=False), "mid": SitePlan()},
}


class HalloFamily(ModelFamily):
    name = "hallo"
    description = "Hallo"

    def options(self, config) -> HalloOptions:
        return HalloOptions.from_dict(config.family_options)

    def reference_options(self, config) -> ReferenceOptions:
        fp16 = self.options(config).reference_bank_fp16
        return ReferenceOptions(motion_source="attention_input", feature_dtype=torch.float16 if fp16 else None)

    def backbone_options(self, config) -> BackboneOptions:
        options = self.options(config)
        return BackboneOptions(
            site_plan=SITE_PLANS[options.inference_path], tile_reference_items=True,
            audio_module=lambda cfg, site: region_audio_module(cfg, site, options.audio_attention_dim,
                                                               options.shared_audio_attention))

    def audio_token_dim(self, config) -> int:
        return self.options(config).audio_attention_dim

    def extra_modules(self, config) -> dict[str, nn.Module]:
        options = self.options(config)
        return {"face_projection": FaceEmbeddingProjection(options.face_embedding_dim, options.face_tokens,
                                                           config.unet.cross_attention_dim)}

    def motion_pixels(self, config, pixels, mask, generator):
        rate = self.options(config).motion_mask_rate  # Hallo2: 0.25
        return mask_motion_pixels(pixels, mask, rate, generator) if rate > 0 else None

    def encode_audio(self, model, waveform, sample_rate, fps, *, start_seconds=0.0, duration_seconds=None,
                     progress=None):
        """Hallo's audio front end (`audio.py`): wav2vec2's CNN features interpolated to the frame
        count before the transformer, the audio padded with silence to whole clips of the model's
        clip length (the padding is part of the transformer's context, as in Hallo), then the
        features of the frames the audio covers. fps must be a whole number (Hallo: 25)."""
        if float(fps) != int(fps):
            raise ValueError(f"Hallo audio: fps must be a whole number of frames per second (Hallo runs at 25), "
                             f"got {fps:g}")
        trimmed = audio_lib.trim(audio_lib.as_channels_first(waveform, "Hallo audio"), int(sample_rate),
                                 start_seconds, duration_seconds)
        trimmed = trimmed.detach().to("cpu", torch.float32).contiguous()
        clip = model.config.defaults.frames_per_clip
        # Hallo2 cuts long audio into 60 s pieces (its options say so); Hallo and JoyHallo run it whole.
        hallo = lineage_audio_features(self.options(model.config), model.audio_encoder, trimmed, int(sample_rate),
                                       int(fps), clip_length=clip, progress=progress)
        return audio_lib.AudioFeatures(features=hallo.features[:hallo.num_frames], fps=float(fps), waveform=trimmed,
                                       sample_rate=int(sample_rate))

    def check_face_embedding(self, face_embedding) -> None:
        return None  # checked against the model's width in video_conditioning

    def portrait_conditioning(self, model, reference, face_embedding) -> HalloPortrait:
        """Hallo's identity and masks of the reference. The model's identity source
        (`attach_identity`: the face_analysis folder, or identity off by choice) decides; without
        one, a given embedding is used with the face-box masks, and no embedding is an error."""
        if isinstance(face_embedding, HalloPortrait):
            return face_embedding
        source = getattr(model, "hallo_identity", None)
        if source is None:
            if face_embedding is None:
                raise ValueError(
                    "Hallo: no identity source; Hallo conditions on the portrait's ArcFace embedding from "
                    "pretrained_models/face_analysis/models/ (scrfd_10g_bnkps.onnx, glintr100.onnx): load the model "
                    "from the Hallo folder (--hallo-dir, or EMO Load Hallo's hallo_dir), give its face_analysis folder "
                    "(--face-analysis), give --face-embedding, or "
                    "choose to run without identity (--no-identity)")
            return hallo_portrait(reference, None, embedding=face_embedding)
        return hallo_portrait(reference, source.folder, identity=source.identity, embedding=face_embedding,
                              landmark_source=source.landmark_source)

    def video_conditioning(self, model, *, mask, face_embedding, motion_frames, region_scales, use_cfg,
                           latent_hw=None) -> VideoConditioning:
        config = model.config
        options = self.options(config)
        device, dtype = model.device, model.dtype
        levels = len(config.unet.block_out_channels)
        if latent_hw is None:
            latent_hw = (mask.shape[0] // config.latent_scale, mask.shape[1] // config.latent_scale)
        portrait = face_embedding if isinstance(face_embedding, HalloPortrait) else \
            HalloPortrait(None if face_embedding is None else torch.as_tensor(face_embedding), None, "box")
        if portrait.masks is not None:
            # Hallo's own masks: the face locator sees its face rectangle, the audio modules its
            # blurred background / face / lip masks resized to each level.
            size = mask.shape[0]
            face_features = model.face_locator(portrait.face_region(size)[None].to(device, dtype))
            masks = portrait.level_masks(size, levels)
        else:
            face_features = model.face_locator(mask[None, None].to(device, dtype))
            masks = box_level_masks(mask, latent_hw, levels)
        if portrait.embedding is None:
            embedding = torch.zeros(1, options.face_embedding_dim)  # identity off (chosen): Hallo's no-face value
        else:
            embedding = portrait.embedding.to(torch.float32).reshape(1, -1)
        if embedding.shape[1] != options.face_embedding_dim:
            raise ValueError(f"the face embedding has {embedding.shape[1]} values; this Hallo model takes "
                             f"{options.face_embedding_dim} (the portrait's ArcFace embedding).")
        cond = model.face_projection(embedding.to(device, dtype))
        by_level = [[masks[kind][level].to(device, dtype) for kind in ("full", "face", "lip")]
                    for level in range(levels)]
        n = motion_frames
        if use_cfg:
            uncond = model.face_projection(torch.zeros_like(embedding).to(device, dtype))
            context = torch.cat([uncond, cond])
            # Hallo's write pass: [ref, motion...] twice, contexts alternating u, c, u, c, ...
            reference_context, items = context.repeat(1 + n, 1, 1), 2
            face_features = torch.cat([torch.zeros_like(face_features), face_features])
        else:
            context, reference_context, items = cond, cond.repeat(1 + n, 1, 1), 1
        scales = list(region_scales)

        support = mask_support(by_level)  # the pixels each mask covers, found once per video

        def audio_inputs(tokens: torch.Tensor, silent_rows: tuple | None = None) -> RegionAudioInputs:
            return RegionAudioInputs(tokens=tokens.to(dtype).flatten(0, 1), masks=by_level, scales=scales,
                                     support=support, silent=silent_rows)

        return VideoConditioning(face_features=face_features, reference_context=reference_context,
                                 reference_items=items, context=context, audio_inputs=audio_inputs,
                                 batched_guidance_only=True, extra={"landmark_source": portrait.landmark_source})
