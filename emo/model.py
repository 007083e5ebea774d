"""`EMOModel`: every network of a model in one module, which is what a checkpoint stores.

The shared networks come from `emo.models`; the model's family (`emo.families`, named by its
config) says how to build them (`ReferenceOptions`, `BackboneOptions`) and adds its own parts
(e.g. Hallo's `face_projection`).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn

from .config import EMOConfig
from .families import ModelFamily, family_of
from .models.face_locator import FaceLocator
from .models.speed import SpeedEncoder
from .models.unet import Backbone, ReferenceNet

# Top-level parts of the state dict, in the order the pipeline uses them; a family may add more.
COMPONENTS = ("reference_net", "backbone", "face_locator", "audio_projection", "speed_encoder",
              "face_projection", "vae", "audio_encoder")


class EMOModel(nn.Module):
    def __init__(self, config: EMOConfig):
        super().__init__()
        self.config = config
        family = family_of(config)
        family.options(config)  # parse and check the family's options now, not mid-generation
        unet = config.unet
        speed_dim = config.speed.embed_dim if config.speed is not None else None
        self.reference_net = ReferenceNet(family.reference_unet_config(config), family.reference_options(config))
        self.backbone = Backbone(unet, config.temporal, speed_dim, family.backbone_options(config))
        self.face_locator = FaceLocator(config.face_locator, out_channels=unet.block_out_channels[0])
        self.audio_projection = family.audio_projection(config)
        for name, module in family.extra_modules(config).items():
            self.add_module(name, module)
        self.speed_encoder = SpeedEncoder(config.speed) if config.speed is not None else None
        self.vae = AutoencoderKL(**config.vae)
        self.audio_encoder = family.audio_encoder(config)

    @classmethod
    def from_preset(cls, name: str, *, seed: int | None = None, device="cpu") -> "EMOModel":
        """A randomly initialised model of a preset (`tiny`, `demo` or `sd15`); `device="meta"`
        builds the structure without allocating weights."""
        config = EMOConfig.preset(name)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            return cls(config).eval()

    @property
    def family(self) -> ModelFamily:
        return family_of(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.conv_in.weight.device

    @device.setter
    def device(self, value) -> None:
        """Model managers (ComfyUI's ModelPatcher) record where they put a model; here the
        weights say it, so the record is not kept."""

    def get_dtype(self) -> torch.dtype:
        """The weights' dtype (the name ComfyUI's model management asks for)."""
        return self.dtype
