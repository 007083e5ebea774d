"""EMO Paste Back: the sampler's square frames composited back into the original photo -> IMAGE
of the photo's size (emo.paste_back)."""

from __future__ import annotations

import logging

import torch

from ..emo.paste_back import DEFAULT_FEATHER, REGIONS, PasteBack

from . import comfy_services as services
from .reference import EMOReference

logger = logging.getLogger(__name__)

NODE = "EMO Paste Back"
# Frames composited per step: the output is preallocated, so beyond it only this many resized
# squares (and their blend) are in memory at once.
FRAMES_PER_STEP = 8


def paste_back(frames: torch.Tensor, image: torch.Tensor, reference: EMOReference,
               feather: float = DEFAULT_FEATHER, region: str = "crop", colour_match: bool = True) -> torch.Tensor:
    """IMAGE frames [F, S, S, 3] + the original IMAGE [B, H, W, 3] (the first is used) + the
    EMO_REFERENCE made from it -> IMAGE [F, H, W, 3]: the photo with each frame blended in.

    The output is allocated once and filled FRAMES_PER_STEP frames at a time, so the extra
    memory is a few frames, but the output itself holds every frame at the photo's size
    (F x H x W x 3 x 4 bytes: 250 frames of 1920x1080 are 6.2 GB). ComfyUI keeps IMAGE batches
    in RAM; for long videos stream the frames instead (the command line `emo generate` pastes
    back clip by clip while it writes the file)."""
    if not isinstance(reference, EMOReference):
        raise ValueError(f"{NODE}: the reference input must come from EMO Load Reference, got {type(reference).__name__}")
    for name, value in (("frames", frames), ("image", image)):
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] == 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{NODE}: {name} must be an IMAGE batch [B, H, W, 3], got {shape}")
    try:
        paste = PasteBack(image, reference.info, feather=feather, region=region, colour_match=colour_match)
    except ValueError as error:
        message = str(error).removeprefix("paste-back: ")
        raise ValueError(f"{NODE}: {message} (connect the image you gave EMO Load Reference, and its reference)") from error
    total = frames.shape[0]
    height, width = paste.size
    out = torch.empty(total, height, width, 3, dtype=torch.float32)
    progress = services.Progress(total)
    for start in range(0, total, FRAMES_PER_STEP):
        services.check_interrupted()
        stop = min(start + FRAMES_PER_STEP, total)
        try:
            paste.paste(frames[start:stop], out=out[start:stop])
        except ValueError as error:
            raise ValueError(f"{NODE}: {str(error).removeprefix('paste-back: ')}") from error
        progress.update_absolute(stop)
    logger.info("%s: %d frames of %d px pasted into the %dx%d photo at %s (feather %g, region %s)", NODE, total,
                frames.shape[1], width, height, paste.box, feather, region)
    return out


class EMOPasteBack:
    DESCRIPTION = (
        "Puts EMO's animated square back into your original photo: each frame is resized to the crop "
        "LoadReference made and blended in with a feathered edge (colour-matched to the photo), so "
        "the video has the photo's own size and framing. Chain upscalers or face restorers before or "
        "after it. The whole video is held in memory at the photo's size."
    )
    CATEGORY = "EMO/video"
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The frames at the original photo's size, the animated face in place.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {
                    "tooltip": "EMOSampler's frames (or the same frames after a square upscaler).",
                }),
                "image": ("IMAGE", {
                    "tooltip": "The original photo you gave LoadReference (or a resized copy of it, same "
                               "aspect ratio). For a batch, the first image is used.",
                }),
                "reference": ("EMO_REFERENCE", {
                    "tooltip": "LoadReference's reference: it knows where the square was cut from the photo.",
                }),
                "feather": ("FLOAT", {
                    "default": DEFAULT_FEATHER, "min": 0.0, "max": 0.5, "step": 0.01,
                    "tooltip": "Width of the soft edge, as a fraction of the crop's side. Wider hides the edge "
                               "better but shows less of the animated border; 0 is a hard edge.",
                }),
            },
            "optional": {
                "region": (list(REGIONS), {
                    "default": "crop",
                    "tooltip": "crop: the whole animated square (head, hair and neck move); face: only the "
                               "face region, the rest of the square stays the still photo.",
                }),
                "colour_match": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Shift each frame's colour to the photo's where they meet (models often "
                               "drift a little in brightness or tint).",
                }),
            },
        }

    def paste(self, frames, image, reference, feather=DEFAULT_FEATHER, region="crop", colour_match=True):
        return (paste_back(frames, image, reference, feather, region, colour_match),)
