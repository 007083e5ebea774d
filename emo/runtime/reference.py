"""The portrait a model animates, and its face-region mask, aligned with each other.

The face is found once, on the full-resolution source photo (a model's 64 or 512 px crop can be
too small for the detector), and that one box serves everything that needs it: the square crop
around the face, and the face-region mask mapped into the crop. A mask the user gives for the
source image is cropped the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..faces.boxes import box_mask, grow_box, region_from_mask
from ..faces.detect import largest_face
from ..image import as_image, prepare_reference

logger = logging.getLogger(__name__)

FACE_REGION_EXPANSION = 0.2  # the detected face box grown by this per side: room for head motion


def detect_face_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """The largest face of a source photo (the default detector, emo.faces.detect), as an
    integer pixel box (x0, y0, x1, y1) rounded outwards and clipped to the image. Raises
    FaceNotFoundError (a ValueError) when there is none."""
    height, width = image.shape[:2]
    return largest_face(image).pixel_box(width, height)


@dataclass
class Portrait:
    """A prepared reference: image (size, size, 3) in 0..1, its face-region mask (size, size)
    in {0, 1} (None when neither a mask nor a face box was at hand), and the crop `info` of
    `emo.image.prepare_reference` (mode, box = the square in source pixels, source size,
    face_box in source pixels or None)."""

    image: torch.Tensor
    mask: torch.Tensor | None
    info: dict

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def crop_mask(mask: torch.Tensor, info: dict, size: int) -> torch.Tensor:
    """A mask of the source image (H, W) cut to the reference's square (info from
    `prepare_reference`; parts of the square outside the source are no face), at size x size
    (nearest, so a binary mask stays binary)."""
    x0, y0, x1, y1 = info["box"]
    h, w = mask.shape
    canvas = mask.new_zeros(y1 - y0, x1 - x0)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    if canvas.shape == (size, size):
        return canvas
    return F.interpolate(canvas[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0]


def face_region_in_crop(face_box, info: dict, size: int, expand_ratio: float = FACE_REGION_EXPANSION
                        ) -> torch.Tensor:
    """The face-region mask (size, size): a source-pixel face box grown by `expand_ratio` per
    side, mapped into the reference's square and clipped to it."""
    left, top, right, _ = info["box"]
    scale = size / (right - left)
    x0, y0, x1, y1 = grow_box(face_box, expand_ratio)
    mapped = ((x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale)
    return box_mask(mapped, size, size)


def prepare_portrait(image: torch.Tensor, size: int, crop: str = "face", *, mask: torch.Tensor | None = None,
                     face_box=None, face_padding: float = 0.6, expand_ratio: float = FACE_REGION_EXPANSION,
                     detect: bool = True) -> Portrait:
    """A source photo (H, W, 3) in 0..1 -> the square reference and its face-region mask.

    mask: the user's face-region mask for the source image (H, W), or None; face_box: the face
    in source pixels, or None to detect it (when the crop or the mask needs it and `detect`).
    With a mask, the "face" crop becomes a centre crop (the mask says where the face is; nothing
    is detected). Raises FaceNotFoundError (a ValueError) when a needed face is not found.
    """
    image = as_image(image, "prepare_portrait")
    height, width = image.shape[:2]
    source_mask = None
    if mask is not None:
        source_mask = region_from_mask(mask, *_mask_size(mask, height, width))
        if crop == "face" and face_box is None:
            crop = "center"
            logger.info("prepare_portrait: a face mask was given: using a centre crop instead of face detection")
    if face_box is None and detect and (crop == "face" or source_mask is None):
        face_box = detect_face_box(image)
    reference, info = prepare_reference(image, size, crop, face_padding=face_padding,
                                        face_box=face_box if crop == "face" else None)
    info["face_box"] = tuple(face_box) if face_box is not None else None
    if source_mask is not None:
        region = crop_mask(source_mask, info, size)
    elif face_box is not None:
        region = face_region_in_crop(face_box, info, size, expand_ratio)
    else:
        region = None
    return Portrait(image=reference, mask=region, info=info)


def _mask_size(mask: torch.Tensor, height: int, width: int) -> tuple[int, int]:
    shape = tuple(mask.shape[-2:]) if mask.dim() >= 2 else ()
    if mask.dim() == 3 and mask.shape[-1] == 1:
        shape = tuple(mask.shape[:2])
    if shape != (height, width):
        raise ValueError(f"the face mask is {shape[::-1] if shape else tuple(mask.shape)} pixels (width x height) "
                         f"but the image is {(width, height)}; give a mask of the image's size")
    return height, width
