"""Face boxes and the face-region mask.

EMO's face locator is conditioned on a mask of the region where the face may move: the union
of the face boxes found in the frames of a clip (paper, section 3.2, "Face Locator"). At
inference there is only the reference image, so the mask is its face box, grown by a margin to
leave room for head motion, unless the user supplies a mask. Training (emo.train.data) and
inference make that mask with the same `grow_box`.

Boxes are (x0, y0, x1, y1) pixels with x1/y1 exclusive. Masks are float32 [H, W] tensors,
1 inside, 0 outside.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

MASK_HINT = "pass a face mask instead (mask=... / --mask / the EMO Face Region Mask node's mask input)"


class FaceNotFoundError(ValueError):
    """No face was detected where one was needed. Passing a face mask avoids detection."""


def _check_box(box, operation: str) -> Box:
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{operation}: expected a box (x0, y0, x1, y1) of four numbers, got {box!r}") from error
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{operation}: box {box!r} is empty or reversed; expected x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


def _check_size(height: int, width: int, operation: str) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{operation}: {name} must be a positive integer number of pixels, got {value!r}")


def grow_box(box, ratio: float) -> Box:
    """Grow a box (x0, y0, x1, y1), in any number type, by `ratio` times its width (left and
    right) and height (top and bottom), rounded outwards to whole pixels; not clipped. The face
    region of training (`emo.train.data`) and inference (`expand_box`)."""
    x0, y0, x1, y1 = box  # kept in their own number type: training boxes are float32
    grow_x, grow_y = ratio * (x1 - x0), ratio * (y1 - y0)
    return (int(np.floor(x0 - grow_x)), int(np.floor(y0 - grow_y)), int(np.ceil(x1 + grow_x)),
            int(np.ceil(y1 + grow_y)))


def expand_box(box: Box, ratio: float, width: int, height: int) -> Box:
    """Grow a box by `ratio` times its width (left and right) and height (top and bottom).

    ratio 0 keeps the box; 0.2 makes it 1.4x as wide and tall. The box is rounded to whole
    pixels, grown, rounded outwards and clipped to a `width` x `height` image.
    """
    box = _check_box(box, "expand_box")
    _check_size(height, width, "expand_box")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"expand_box: ratio must be a number >= 0 (fraction of the box size per side), got {ratio!r}")
    x0, y0, x1, y1 = grow_box(box, ratio)
    expanded = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if expanded[2] <= expanded[0] or expanded[3] <= expanded[1]:
        raise ValueError(
            f"expand_box: box {box!r} lies outside the {width}x{height} image; give it in this image's pixels"
        )
    return expanded


def union_box(boxes) -> Box:
    """The smallest box containing all `boxes` (EMO's face region: the union over a clip)."""
    checked = [_check_box(box, "union_box") for box in boxes]
    if not checked:
        raise ValueError("union_box: got no boxes; pass at least one (x0, y0, x1, y1) box")
    return (
        min(b[0] for b in checked),
        min(b[1] for b in checked),
        max(b[2] for b in checked),
        max(b[3] for b in checked),
    )


def box_mask(box: Box, height: int, width: int) -> torch.Tensor:
    """A float32 mask [height, width]: 1 inside `box` (clipped to the image), 0 outside."""
    x0, y0, x1, y1 = _check_box(box, "box_mask")
    _check_size(height, width, "box_mask")
    mask = torch.zeros(height, width, dtype=torch.float32)
    mask[max(0, y0) : max(0, min(height, y1)), max(0, x0) : max(0, min(width, x1))] = 1.0
    return mask


def _as_single_mask(mask, operation: str) -> torch.Tensor:
    """Accept [H, W], [1, H, W] or [H, W, 1] (float, bool or integer) and return float32 [H, W]."""
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(np.asarray(mask))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{operation}: expected a mask tensor [H, W], got {type(mask).__name__}") from error
    shape = tuple(mask.shape)
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    elif mask.dim() == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dim() != 2:
        raise ValueError(
            f"{operation}: expected one mask of shape [H, W], [1, H, W] or [H, W, 1], got {shape}; "
            "for a batch of masks pass one of them"
        )
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"{operation}: the mask has no pixels (shape {shape})")
    if mask.is_complex():
        raise ValueError(f"{operation}: expected a real-valued mask, got dtype {mask.dtype}")
    mask = mask.detach().cpu().to(torch.float32)
    if not torch.isfinite(mask).all():
        raise ValueError(f"{operation}: the mask contains NaN or infinite values; expected values in 0..1")
    return mask


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a mask ([H, W], [1, H, W] or [H, W, 1]) to float32 [height, width], nearest pixel.

    Nearest keeps a binary mask binary (no grey edges from interpolation).
    """
    _check_size(height, width, "resize_mask")
    mask = _as_single_mask(mask, "resize_mask")
    if tuple(mask.shape) == (height, width):
        return mask
    # "nearest-exact" samples pixel centres; plain "nearest" shifts the mask by up to a pixel.
    return F.interpolate(mask[None, None], size=(height, width), mode="nearest-exact")[0, 0]


def region_from_mask(mask, height: int, width: int) -> torch.Tensor:
    """A user's face-region mask at height x width, binarised (>= 0.5 is face): float32 [H, W].
    It must select at least one pixel."""
    region = (resize_mask(mask, height, width) >= 0.5).to(torch.float32)
    if not region.any():
        raise ValueError(
            f"the given mask is empty at {width}x{height} (no value >= 0.5); paint the region where the "
            "face moves white (1), or leave the mask out to detect the face"
        )
    return region
