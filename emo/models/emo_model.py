"""`EMOModel`: every network of EMO in one module, which is what a checkpoint stores."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ..config import EMOConfig
from .audio_projection import AudioProjection
from .face_locator import FaceLocator
from .face_projection import FaceEmbeddingProjection
from .speed import SpeedEncoder
from .unet import Backbone, ReferenceNet

# Top-level parts of the state dict, in the order the pipeline uses them.
COMPONENTS = ("reference_net", "backbone", "face_locator", "audio_projection", "speed_encoder",
              "face_projection", "vae", "audio_encoder")


class EMOModel(nn.Module):
    def __init__(self, config: EMOConfig):
        super().__init__()
        self.config = config
        unet = config.unet
        self.reference_net = ReferenceNet(unet, hallo=config.hallo)
        self.backbone = Backbone(unet, config.temporal, speed_dim=config.speed.embed_dim, hallo=config.hallo)
        self.face_locator = FaceLocator(config.face_locator, out_channels=unet.block_out_channels[0])
        self.audio_projection = AudioProjection(config.audio, context_dim=config.audio_token_dim)
        # Hallo only: its spatial cross-attention attends to a projected face embedding.
        self.face_projection = (
            FaceEmbeddingProjection(config.hallo.face_embedding_dim, config.hallo.face_tokens,
                                    unet.cross_attention_dim)
            if config.hallo else None
        )
        self.speed_encoder = SpeedEncoder(config.speed)
        self.vae = AutoencoderKL(**config.vae)
        self.audio_encoder = Wav2Vec2Model(Wav2Vec2Config(**config.audio.wav2vec2))

    @classmethod
    def from_preset(cls, name: str, *, seed: int | None = None, device="cpu") -> "EMOModel":
        """A randomly initialised model of a preset (`tiny` or `sd15`); `device="meta"` builds
        the structure without allocating weights."""
        config = EMOConfig.preset(name)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            return cls(config).eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.conv_in.weight.device
