"""Face boxes and the face-region mask.

EMO's face locator is conditioned on a mask of the region where the face may move: the union
of the face boxes found in the frames of a clip (paper, section 3.2, "Face Locator"). At
inference there is only the reference image, so the mask is its face box, grown by a margin to
leave room for head motion, unless the user supplies a mask.

Detection uses OpenCV's bundled frontal-face Haar cascade: it needs no weights download and
is good enough for the upright, frontal portraits EMO animates. Boxes are (x0, y0, x1, y1)
integer pixels with x1/y1 exclusive. Masks are float32 [H, W] tensors, 1 inside, 0 outside.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from emo.image import as_image

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

CASCADE_FILE = "haarcascade_frontalface_default.xml"

# Haar detection cost grows with the pixel count; portraits are detected just as well on a
# copy whose long side is at most this, and the boxes are scaled back.
_DETECTION_MAX_SIDE = 1024
# The cascade's own window is 24 px; faces smaller than 5% of the short side are not a
# portrait's subject and are usually false positives in background texture.
_MIN_FACE_FRACTION = 0.05

MASK_HINT = "pass a face mask instead (mask=... / --mask / the FaceRegionMask node's mask input)"


class FaceNotFoundError(ValueError):
    """No face was detected where one was needed. Passing a face mask avoids detection."""


@functools.lru_cache(maxsize=1)
def _face_cascade() -> cv2.CascadeClassifier:
    """Load the Haar cascade once per process (the XML takes ~50 ms to parse)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(folder, CASCADE_FILE) if folder else None
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"face detection: OpenCV's {CASCADE_FILE} was not found (looked in {folder!r}); it ships with "
            "the opencv-python wheels before version 5: pip install 'opencv-python>=4.8,<5', or "
            + MASK_HINT
        )
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ValueError(
            f"face detection: OpenCV could not parse {path}; reinstall it with "
            "pip install --force-reinstall 'opencv-python>=4.8,<5'"
        )
    return cascade


def detect_face_boxes(image: torch.Tensor) -> list[Box]:
    """Find frontal faces in an image [H, W, 3] (values 0..1; a batch gives its first image).

    Returns boxes (x0, y0, x1, y1) in pixels of `image`, largest area first; an empty list when
    there is no face.
    """
    image = as_image(image, "detect_face_boxes")
    height, width = image.shape[:2]
    rgb = (image.detach().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    scale = min(1.0, _DETECTION_MAX_SIDE / max(height, width))
    if scale < 1.0:
        gray = cv2.resize(
            gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    # Equalising makes the cascade's fixed contrast thresholds work on dim or washed-out photos.
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(round(min(gray.shape) * _MIN_FACE_FRACTION)))
    found = _face_cascade().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
    )

    boxes = []
    for x, y, w, h in np.asarray(found, dtype=np.int64).reshape(-1, 4):
        box = (
            max(0, int(math.floor(x / scale))),
            max(0, int(math.floor(y / scale))),
            min(width, int(math.ceil((x + w) / scale))),
            min(height, int(math.ceil((y + h) / scale))),
        )
        boxes.append(box)
    boxes.sort(key=lambda b: ((b[2] - b[0]) * (b[3] - b[1]), -b[0], -b[1]), reverse=True)
    logger.debug("detect_face_boxes: %d face(s) in a %dx%d image: %s", len(boxes), width, height, boxes)
    return boxes


def detect_face_box(image: torch.Tensor) -> Box:
    """The largest face of an image [H, W, 3] as (x0, y0, x1, y1) pixels.

    Raises FaceNotFoundError (a ValueError) when no face is found.
    """
    boxes = detect_face_boxes(image)
    if not boxes:
        height, width = as_image(image, "detect_face_box").shape[:2]
        raise FaceNotFoundError(
            f"no face found in the reference image ({width}x{height} px); the detector needs an upright, "
            f"frontal face of at least 24 px: use a clearer portrait, or {MASK_HINT}"
        )
    return boxes[0]


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


def expand_box(box: Box, ratio: float, width: int, height: int) -> Box:
    """Grow a box by `ratio` times its width (left and right) and height (top and bottom).

    ratio 0 keeps the box; 0.2 makes it 1.4x as wide and tall. The result is rounded outwards
    to whole pixels and clipped to a `width` x `height` image.
    """
    x0, y0, x1, y1 = _check_box(box, "expand_box")
    _check_size(height, width, "expand_box")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"expand_box: ratio must be a number >= 0 (fraction of the box size per side), got {ratio!r}")
    grow_x, grow_y = ratio * (x1 - x0), ratio * (y1 - y0)
    expanded = (
        max(0, math.floor(x0 - grow_x)),
        max(0, math.floor(y0 - grow_y)),
        min(width, math.ceil(x1 + grow_x)),
        min(height, math.ceil(y1 + grow_y)),
    )
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


def face_region_mask(
    image: torch.Tensor, expand_ratio: float = 0.2, mask: torch.Tensor | None = None
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
        region = (resize_mask(mask, height, width) >= 0.5).to(torch.float32)
        if not region.any():
            raise ValueError(
                f"face_region_mask: the given mask is empty at {width}x{height} (no value >= 0.5); paint the "
                "region where the face moves white (1), or leave the mask out to detect the face"
            )
        return region
    box = expand_box(detect_face_box(image), expand_ratio, width, height)
    logger.info("face_region_mask: face region %s in a %dx%d image", box, width, height)
    return box_mask(box, height, width)
