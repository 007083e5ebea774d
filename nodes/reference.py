"""The portrait: LoadReference (IMAGE -> square EMO_REFERENCE) and FaceRegionMask (-> MASK)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..emo.faces.boxes import FaceNotFoundError, region_from_mask
from ..emo.faces.region import face_region_mask
from ..emo.runtime.reference import crop_mask, detect_face_box, face_region_in_crop, prepare_portrait

from .model import EMOModelHandle

logger = logging.getLogger(__name__)

CROP_MODES = ("face", "center", "pad")  # emo.image.prepare_reference's modes


DEFAULT_SIZE = 512  # without a model to ask


@dataclass(eq=False)
class EMOReference:
    """What flows through an EMO_REFERENCE link."""

    image: torch.Tensor  # (size, size, 3) float 0..1, CPU
    info: dict = field(default_factory=dict)  # from emo.image.prepare_reference: mode, box, source size, face_box
    mask: torch.Tensor | None = None  # (size, size) face region from the one detection, or None

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


def load_reference(image: torch.Tensor, size: int, crop: str, face_padding: float = 0.6,
                   model: EMOModelHandle | None = None):
    """IMAGE [B, H, W, 3] -> (EMOReference, prepared IMAGE [1, size, size, 3]). size 0: the
    model's own (512 without a model). The face is detected once, on the full-resolution image;
    its box places the face crop and the face-region mask."""
    node = "EMO Load Reference"
    if crop not in CROP_MODES:
        raise ValueError(f"{node}: unknown crop {crop!r}; choose one of {', '.join(CROP_MODES)}")
    if not size:
        size = model.defaults.size if model is not None else DEFAULT_SIZE
    if size % 8:
        raise ValueError(f"{node}: size must be a multiple of 8 (the VAE works on an 8x smaller grid), got {size}")
    first = _first_image(image, node)
    height, width = first.shape[:2]
    try:
        face_box = detect_face_box(first)
    except FaceNotFoundError as error:
        if crop == "face":
            raise ValueError(
                f"{node}: no face found in the {width}x{height} image for the face crop; set crop to 'center' "
                f"or 'pad', or use an upright, frontal portrait ({error})"
            ) from error
        face_box = None  # the sampler then needs a face_mask
    try:
        portrait = prepare_portrait(first, size, crop, face_box=face_box, face_padding=face_padding, detect=False)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from error
    info = portrait.info
    logger.info("%s: %s crop %s of a %dx%d image -> %d px (face %s)", node, info["mode"], info["box"],
                width, height, size, info["face_box"])
    return EMOReference(image=portrait.image, info=info, mask=portrait.mask), portrait.image[None]


def face_mask(image: torch.Tensor, expand_ratio: float = 0.2, mask: torch.Tensor | None = None,
              reference: EMOReference | None = None) -> torch.Tensor:
    """IMAGE -> MASK [1, H, W]: `mask` binarised (a mask of the source photo is cropped as the
    reference was, when `reference` is given), or the face box grown by expand_ratio: the box
    LoadReference found in the full-resolution photo when `reference` is given (no second
    detection), else one detected in `image`."""
    node = "EMO Face Region Mask"
    first = _first_image(image, node)
    if mask is not None and reference is not None:
        override = mask[0] if mask.dim() == 3 else mask
        source = (reference.info.get("source_height"), reference.info.get("source_width"))
        if tuple(override.shape) == source and source != tuple(first.shape[:2]):
            try:
                region = region_from_mask(override.float().cpu(), *source)
            except ValueError as error:
                raise ValueError(f"{node}: {error}") from error
            return crop_mask(region, reference.info, first.shape[0])[None]
    if mask is None and reference is not None and reference.info.get("face_box") is not None:
        height, width = first.shape[:2]
        if (height, width) != (reference.size, reference.size):
            raise ValueError(f"{node}: the image is {width}x{height} but the reference is {reference.size}x"
                             f"{reference.size}; connect EMO Load Reference's image output")
        return face_region_in_crop(reference.info["face_box"], reference.info, reference.size, expand_ratio)[None]
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
        "generator, a face restorer. Outputs the reference for EMO Sampler and the prepared image "
        "(connect it to EMO Face Region Mask and to a preview)."
    )
    CATEGORY = "EMO/conditioning"
    FUNCTION = "prepare"
    RETURN_TYPES = ("EMO_REFERENCE", "IMAGE")
    RETURN_NAMES = ("reference", "image")
    OUTPUT_TOOLTIPS = (
        "The prepared portrait for EMO Sampler.",
        "The same square image as an IMAGE, for previews and EMO Face Region Mask.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {
                    "tooltip": "The portrait. For a batch, only the first image is used.",
                }),
                "size": ("INT", {
                    "default": 0, "min": 0, "max": 2048, "step": 8,
                    "tooltip": "Output width = height in pixels, a multiple of 8; 0 = what the connected model "
                               "was trained at (512 for EMO and Hallo, 64 for the demo model; 512 without a model).",
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
            "optional": {
                "model": ("EMO_MODEL", {
                    "tooltip": "The model the reference is for: size 0 takes its trained size.",
                }),
            },
        }

    def prepare(self, image, size, crop, face_padding=0.6, model=None):
        return load_reference(image, size, crop, face_padding, model)


class EMOFaceRegionMask:
    DESCRIPTION = (
        "The face region EMO keeps the face inside (the face locator's mask): the detected face "
        "box grown by expand_ratio, or your own mask. Feed it the prepared image from "
        "EMO Load Reference so the mask lines up with the reference."
    )
    CATEGORY = "EMO/conditioning"
    FUNCTION = "make_mask"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("1 where the face may move, 0 elsewhere; connect it to EMO Sampler's face_mask.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {
                    "tooltip": "The portrait to find the face in: EMO Load Reference's image output. For a batch, "
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
                "reference": ("EMO_REFERENCE", {
                    "tooltip": "From EMO Load Reference: use the face it found in the full-resolution photo instead "
                               "of detecting again in the small prepared image.",
                }),
            },
        }

    def make_mask(self, image, expand_ratio=0.2, mask=None, reference=None):
        return (face_mask(image, expand_ratio, mask, reference),)
