"""The portrait: LoadReference (IMAGE -> square EMO_REFERENCE) and FaceRegionMask (-> MASK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from emo.face import FaceNotFoundError, face_region_mask
from emo.image import prepare_reference

logger = logging.getLogger(__name__)

CROP_MODES = ("face", "center", "pad")  # emo.image.prepare_reference's modes


@dataclass(eq=False)
class EMOReference:
    """What flows through an EMO_REFERENCE link."""

    image: torch.Tensor  # (size, size, 3) float 0..1, CPU
    info: dict = field(default_factory=dict)  # from emo.image.prepare_reference: mode, box, source size

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def _first_image(image: torch.Tensor, node: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{node}: expected an IMAGE batch [B, H, W, 3], got {shape}")
    if image.shape[0] == 0:
        raise ValueError(f"{node}: the IMAGE batch is empty; connect an image")
    if image.shape[0] > 1:
        logger.info("%s: got %d images, using the first", node, image.shape[0])
    return image[0, ..., :3].float().cpu()  # an alpha channel (some loaders keep it) is dropped


def load_reference(image: torch.Tensor, size: int, crop: str, face_padding: float = 0.6):
    """IMAGE [B, H, W, 3] -> (EMOReference, prepared IMAGE [1, size, size, 3])."""
    node = "LoadReference"
    if crop not in CROP_MODES:
        raise ValueError(f"{node}: unknown crop {crop!r}; choose one of {', '.join(CROP_MODES)}")
    if size % 8:
        raise ValueError(f"{node}: size must be a multiple of 8 (the VAE works on an 8x smaller grid), got {size}")
    first = _first_image(image, node)
    try:
        prepared, info = prepare_reference(first, size, crop, face_padding=face_padding)
    except FaceNotFoundError as error:
        height, width = first.shape[:2]
        raise ValueError(
            f"{node}: no face found in the {width}x{height} image for the face crop; set crop to 'center' "
            f"or 'pad', or use an upright, frontal portrait ({error})"
        ) from error
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from error
    logger.info("%s: %s crop %s of a %dx%d image -> %d px", node, info["mode"], info["box"],
                info["source_width"], info["source_height"], size)
    return EMOReference(image=prepared, info=info), prepared[None]


def face_mask(image: torch.Tensor, expand_ratio: float = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """IMAGE -> MASK [1, H, W]: the detected face box grown by expand_ratio, or `mask` binarised."""
    node = "FaceRegionMask"
    first = _first_image(image, node)
    override = None
    if mask is not None:
        if mask.dim() == 3:
            if mask.shape[0] > 1:
                logger.info("%s: got %d masks, using the first", node, mask.shape[0])
            override = mask[0]
        else:
            override = mask
    try:
        region = face_region_mask(first, expand_ratio=expand_ratio, mask=override)
    except FaceNotFoundError as error:
        height, width = first.shape[:2]
        raise ValueError(
            f"{node}: no face found in the {width}x{height} image; connect a mask to the 'mask' input "
            "(white where the face and head may move) to skip detection, or use an upright, frontal portrait"
        ) from error
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from error
    return region[None]


class EMOLoadReference:
    DESCRIPTION = (
        "Prepares the portrait EMO animates: crops it to a square (around the detected face, the "
        "centre, or the whole image padded) and resizes it. Any IMAGE works: LoadImage, a "
        "generator, a face restorer. Outputs the reference for EMOSampler and the prepared image "
        "(connect it to FaceRegionMask and to a preview)."
    )
    CATEGORY = "EMO"
    FUNCTION = "prepare"
    RETURN_TYPES = ("EMO_REFERENCE", "IMAGE")
    RETURN_NAMES = ("reference", "image")
    OUTPUT_TOOLTIPS = (
        "The prepared portrait for EMOSampler.",
        "The same square image as an IMAGE, for previews and FaceRegionMask.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {
                    "tooltip": "The portrait. For a batch, only the first image is used.",
                }),
                "size": ("INT", {
                    "default": 512, "min": 64, "max": 2048, "step": 8,
                    "tooltip": "Output width = height in pixels, a multiple of 8. Use what the checkpoint "
                               "was trained at (512 for EMO).",
                }),
                "crop": (list(CROP_MODES), {
                    "default": "face",
                    "tooltip": "face: a square centred on the detected face with face_padding margin; "
                               "center: the largest centred square; pad: the whole image, edges repeated "
                               "to make it square.",
                }),
                "face_padding": ("FLOAT", {
                    "default": 0.6, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": "Face crop only: margin around the face on each side, in face sizes "
                               "(0.6 leaves room for hair, neck and head motion).",
                }),
            },
        }

    def prepare(self, image, size, crop, face_padding=0.6):
        return load_reference(image, size, crop, face_padding)


class EMOFaceRegionMask:
    DESCRIPTION = (
        "The face region EMO keeps the face inside (the face locator's mask): the detected face "
        "box grown by expand_ratio, or your own mask. Feed it the prepared image from "
        "LoadReference so the mask lines up with the reference."
    )
    CATEGORY = "EMO"
    FUNCTION = "make_mask"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 where the face may move, 0 elsewhere; connect it to EMOSampler's face_mask.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {
                    "tooltip": "The portrait to find the face in: LoadReference's image output. For a batch, "
                               "the first image is used.",
                }),
                "expand_ratio": ("FLOAT", {
                    "default": 0.2, "min": 0.0, "max": 2.0, "step": 0.05,
                    "tooltip": "Grow the detected face box by this fraction of its size on every side, to "
                               "leave room for head motion.",
                }),
            },
            "optional": {
                "mask": ("MASK", {
                    "tooltip": "Override: your own face-region mask (white = face region), used instead of "
                               "detection. Needed when no face is detected (stylised or profile portraits).",
                }),
            },
        }

    def make_mask(self, image, expand_ratio=0.2, mask=None):
        return (face_mask(image, expand_ratio, mask),)
