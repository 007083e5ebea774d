"""Stand-ins for the few ComfyUI core nodes the shipped workflows use (LoadImage, LoadAudio,
LoadImageMask, ImageScaleBy, PreviewImage), so the workflows run through the node classes
without ComfyUI.

They declare the same inputs and outputs as the core nodes and produce the same types
(IMAGE [B, H, W, 3] 0..1, MASK [B, H, W], AUDIO {"waveform": [B, C, T], "sample_rate"}).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from emo.audio import load_audio
from emo.image import load_image


def make_core_nodes(input_dir: Path) -> dict[str, type]:
    files = sorted(p.name for p in Path(input_dir).iterdir() if p.is_file())

    class LoadImage:
        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"
        CATEGORY = "image"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": (files, {"image_upload": True})}}

        def load_image(self, image):
            pixels = load_image(Path(input_dir) / image)[None]  # [1, H, W, 3]
            return pixels, torch.zeros(1, pixels.shape[1], pixels.shape[2])

    class LoadAudio:
        RETURN_TYPES = ("AUDIO",)
        FUNCTION = "load"
        CATEGORY = "audio"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"audio": (files, {"audio_upload": True})}}

        def load(self, audio):
            waveform, sample_rate = load_audio(Path(input_dir) / audio)
            return ({"waveform": waveform[None], "sample_rate": sample_rate},)

    class LoadImageMask:
        RETURN_TYPES = ("MASK",)
        FUNCTION = "load_image"
        CATEGORY = "mask"
        CHANNELS = ["alpha", "red", "green", "blue"]

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": (files, {"image_upload": True}), "channel": (cls.CHANNELS,)}}

        def load_image(self, image, channel):
            from PIL import Image

            rgba = torch.from_numpy(__import__("numpy").array(Image.open(Path(input_dir) / image).convert("RGBA")))
            mask = rgba[..., self.CHANNELS.index(channel) - 1 if channel != "alpha" else 3].float() / 255.0
            return ((1.0 - mask if channel == "alpha" else mask)[None],)

    class ImageScaleBy:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "upscale"
        CATEGORY = "image/upscaling"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {
                "image": ("IMAGE",),
                "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }}

        def upscale(self, image, upscale_method, scale_by):
            height, width = round(image.shape[1] * scale_by), round(image.shape[2] * scale_by)
            mode = "bicubic" if upscale_method == "lanczos" else upscale_method
            resized = F.interpolate(image.movedim(-1, 1), size=(height, width), mode=mode)
            return (resized.movedim(1, -1).clamp(0, 1),)

    class PreviewImage:
        RETURN_TYPES = ()
        FUNCTION = "save_images"
        OUTPUT_NODE = True
        CATEGORY = "image"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",)}}

        def save_images(self, images):
            return {"ui": {"images": [{"shape": list(images.shape)}]}}

    return {cls.__name__: cls for cls in (LoadImage, LoadAudio, LoadImageMask, ImageScaleBy, PreviewImage)}
