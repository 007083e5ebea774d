"""The EMO family: Emote Portrait Alive (Tian et al., arXiv 2402.17485), as the paper describes it.

- ReferenceNet (§3.2): the reference image and the n motion frames go through a copy of the
  SD UNet at timestep 0; each backbone `attn1` attends to its own tokens plus the reference's
  (reference-attention), and each temporal module sees the motion frames' features (the output of
  the (resnet, transformer) pair at its site) prepended to the clip's frames.
- Audio layers (§3.2): wav2vec2 features of all layers, a window of ±m frames per video frame,
  projected to tokens; `attn2` of every spatial transformer is the audio-attention to them.
- Face locator (§3.2): a conv net on the face-region mask, added after `conv_in`.
- Speed layers (§3.2): a per-frame speed embedding cross-attended inside the temporal modules.
- Inference (§4): the first clip's motion frames are zeros; classifier-free guidance drops the
  audio and the reference in the unconditional branch (see emo/pipeline.py).
"""

from __future__ import annotations

from ..models.unet import BackboneOptions, ReferenceOptions
from .base import ModelFamily, VideoConditioning


class EMOFamily(ModelFamily):
    name = "emo"
    description = "EMO"

    def reference_options(self, config) -> ReferenceOptions:
        return ReferenceOptions(motion_source="block_output")

    def backbone_options(self, config) -> BackboneOptions:
        return BackboneOptions()  # every site runs its temporal module with the motion frames

    def audio_token_dim(self, config) -> int:
        return config.unet.cross_attention_dim  # the audio tokens are attn2's context

    def video_conditioning(self, model, *, mask, face_embedding, motion_frames, region_scales, use_cfg,
                           latent_hw=None) -> VideoConditioning:
        self.check_face_embedding(face_embedding)
        face_features = model.face_locator(mask[None, None].to(model.device, model.dtype))
        # One face-locator row serves both guidance rows: the mask is layout, not identity.
        return VideoConditioning(face_features=face_features, context="audio")
