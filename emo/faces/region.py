"""The face-region mask of a reference image: the user's mask, or a detected face box grown."""

from __future__ import annotations

import logging

import torch

from ..image import as_image
from .boxes import box_mask, expand_box, region_from_mask
from .detect import largest_face

logger = logging.getLogger(__name__)


def face_region_mask(image: torch.Tensor, expand_ratio: float = 0.2, mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """The face-region mask [H, W] (float32, 0 or 1) for a reference image [H, W, 3].

    With `mask`: it is resized to the image (nearest), binarised (>= 0.5 becomes 1) and
    returned; it must select at least one pixel. Without: the largest detected face box, grown by
    `expand_ratio` per side (see `expand_box`), as a box mask. Raises FaceNotFoundError when no
    face is found and no mask was given.
    """
    image = as_image(image, "face_region_mask")
    height, width = image.shape[:2]
    if mask is not None:
        return region_from_mask(mask, height, width)
    box = expand_box(largest_face(image).pixel_box(width, height), expand_ratio, width, height)
    logger.info("face_region_mask: face region %s in a %dx%d image", box, width, height)
    return box_mask(box, height, width)
