"""OpenCV's bundled frontal-face Haar cascade: the fallback detector.

It needs no weights download and finds upright, frontal faces of at least 24 px; boxes are
integer pixels (x0, y0, x1, y1), x1/y1 exclusive, largest first.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import cv2
import numpy as np
import torch

from ..image import as_image
from .boxes import MASK_HINT, Box, FaceNotFoundError

logger = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"

# Haar detection cost grows with the pixel count; portraits are detected just as well on a
# copy whose long side is at most this, and the boxes are scaled back.
_DETECTION_MAX_SIDE = 1024
# The cascade's own window is 24 px; faces smaller than 5% of the short side are not a
# portrait's subject and are usually false positives in background texture.
_MIN_FACE_FRACTION = 0.05

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


