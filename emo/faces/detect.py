"""Finding the faces in a portrait: the family-neutral detection API.

The default detector is MTCNN (`emo.faces.mtcnn`) with the original weights that the `mtcnn`
PyPI package ships (no download). It runs once on the full source image, in any framing
(square, 16:9, 9:16...), and finds frontal and moderately turned faces from 40 px up; images
with a side over 2048 px are detected on a downscaled copy and the boxes are mapped back, and a
photo where no face is found is tried once more darkened (over-exposed faces).

Boxes are (x0, y0, x1, y1) float pixels of the source image, continuous coordinates: pixel
(row i, column j) covers [j, j+1) x [i, i+1), so width = x1 - x0. They are MTCNN's boxes:
about brow to chin and cheek to cheek (ears and hair outside), taller than wide. Against
facenet-pytorch's MTCNN (EchoMimic's detector; same weights, 1-based inclusive pixel boxes)
our boxes on the same image differ by a few pixels (tests/emo/faces/test_mtcnn.py measures it);
its landmarks use the same coordinates as ours.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..image import as_image
from .boxes import MASK_HINT, FaceNotFoundError
from .mtcnn import PNET_WINDOW, CascadeSettings, load_mtcnn

logger = logging.getLogger(__name__)

DEFAULT_MIN_FACE_SIZE = 40.0
# Detection cost grows with the pixel count; past this side a photo is detected on a smaller
# copy (the smallest face found grows in proportion: 75 px on a 3840 px photo).
MAX_DETECTION_SIDE = 2048
# MTCNN misses faces washed out by over-exposure (measured: a bright +30% gain +25 levels on a
# turned face). When a photo gives no face, it is detected once more on a darkened copy
# (gamma 1.8), which brings most of them back and found no face in any non-face photo tested.
RETRY_GAMMA = 1.8
_DARKEN = np.clip(((np.arange(256) / 255.0) ** RETRY_GAMMA) * 255.0, 0, 255).round().astype(np.uint8)
LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectedFace:
    """One face. box: (x0, y0, x1, y1) float pixels of the image it was found in; score: the
    detector's face probability 0..1; landmarks: 5 (x, y) points in the same pixels, in the
    order of LANDMARK_NAMES ("left" is the image's left), or None when the detector gives none."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in whole pixels (rounded outwards) clipped to a `width` x `height` image:
        the integer box `emo.face` works with (x1, y1 exclusive)."""
        x0, y0, x1, y1 = self.box
        return (max(0, math.floor(x0)), max(0, math.floor(y0)), min(width, math.ceil(x1)), min(height, math.ceil(y1)))

    def in_crop(self, crop_box, size) -> "DetectedFace":
        """This face in the pixels of a crop of its image, resized to `size`.

        crop_box: (x0, y0, x1, y1) of the crop in this face's image (it may reach outside the
        image, as `emo.image.prepare_reference`'s info["box"] does); size: the crop's side
        after resizing (an int for a square) or (width, height). Maps the box and landmarks;
        the result may lie partly outside the crop.
        """
        cx0, cy0, cx1, cy1 = (float(v) for v in crop_box)
        if cx1 <= cx0 or cy1 <= cy0:
            raise ValueError(f"DetectedFace.in_crop: crop box {crop_box!r} is empty or reversed; expected x0 < x1, y0 < y1")
        out_w, out_h = (size, size) if isinstance(size, (int, float)) else size
        sx, sy = out_w / (cx1 - cx0), out_h / (cy1 - cy0)
        x0, y0, x1, y1 = self.box
        box = ((x0 - cx0) * sx, (y0 - cy0) * sy, (x1 - cx0) * sx, (y1 - cy0) * sy)
        points = None if self.landmarks is None else tuple(((x - cx0) * sx, (y - cy0) * sy) for x, y in self.landmarks)
        return replace(self, box=box, landmarks=points)


def _as_rgb_uint8(image, operation: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB from our float tensor (0..1; a batch gives its first image) or from
    a numpy array (uint8 0..255, or float 0..1)."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
                raise ValueError(
                    f"{operation}: expected a uint8 RGB array of shape [H, W, 3], got {image.shape}; convert "
                    "grayscale or RGBA images to RGB first"
                )
            return np.ascontiguousarray(image)
        try:
            image = torch.from_numpy(np.asarray(image, dtype=np.float32))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{operation}: cannot read an array of dtype {image.dtype} as an image") from error
    image = as_image(image, operation)
    if not torch.isfinite(image).all():
        raise ValueError(f"{operation}: the image contains NaN or infinite values; expected values in 0..1")
    return (image.detach().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def _check_min_face_size(min_face_size, operation: str) -> float:
    if min_face_size is None:
        return DEFAULT_MIN_FACE_SIZE
    if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, float)) or not (
        math.isfinite(min_face_size) and min_face_size >= PNET_WINDOW
    ):
        raise ValueError(
            f"{operation}: min_face_size must be a number of pixels >= {PNET_WINDOW} (the detector's "
            f"smallest window), got {min_face_size!r}; the default is {DEFAULT_MIN_FACE_SIZE:g}"
        )
    return float(min_face_size)


def detect_faces(image, *, min_face_size: float | None = None) -> list[DetectedFace]:
    """Every face in `image`, largest area first (ties: most likely first).

    image: [H, W, 3] float tensor 0..1 (our IMAGE; [N, H, W, 3] gives its first image), or a
        numpy array [H, W, 3] (uint8 0..255 or float 0..1), RGB.
    min_face_size: smallest face looked for, in source pixels (default 40, at least 12); on
        images with a side over MAX_DETECTION_SIDE it grows with the downscaling.

    Returns DetectedFace items (boxes and landmarks in source pixels); an empty list when there
    is no face.
    """
    rgb = _as_rgb_uint8(image, "detect_faces")
    min_face = _check_min_face_size(min_face_size, "detect_faces")
    height, width = rgb.shape[:2]

    scale = min(1.0, MAX_DETECTION_SIDE / max(height, width))
    if scale < 1.0:
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        logger.info("detect_faces: a %dx%d image is detected at %dx%d", width, height, *small)
    scale_x, scale_y = rgb.shape[1] / width, rgb.shape[0] / height
    settings = CascadeSettings(min_face_size=max(float(PNET_WINDOW), min_face * min(scale_x, scale_y)))

    model = load_mtcnn()
    boxes, scores, landmarks = model.detect(rgb, settings)
    if len(boxes) == 0:
        boxes, scores, landmarks = model.detect(_DARKEN[rgb], settings)
        if len(boxes):
            logger.info("detect_faces: found %d face(s) only on a darkened copy (an over-exposed photo)", len(boxes))
    to_source = np.array([scale_x, scale_y])
    faces = [
        DetectedFace(
            box=tuple(float(v) for v in (box.reshape(2, 2) / to_source).reshape(4)),
            score=float(score),
            landmarks=tuple((float(x), float(y)) for x, y in points / to_source),
        )
        for box, score, points in zip(boxes, scores, landmarks)
    ]
    faces.sort(key=lambda face: (-face.area, -face.score, face.box[0], face.box[1]))
    logger.debug(
        "detect_faces: %d face(s) in a %dx%d image: %s",
        len(faces), width, height, [(tuple(round(v, 1) for v in f.box), round(f.score, 3)) for f in faces],
    )
    return faces


def _image_size(image) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    shape = as_image(image, "detect_faces").shape
    return shape[1], shape[0]


def pick_face(image, index: int = 0, *, min_face_size: float | None = None) -> DetectedFace:
    """The face at `index` in `detect_faces` order (0: the largest, 1: the next largest...).

    Raises FaceNotFoundError (a ValueError) when there is no face, and ValueError when there are
    fewer than index + 1 faces.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"pick_face: index must be an integer >= 0 (0 is the largest face), got {index!r}")
    faces = detect_faces(image, min_face_size=min_face_size)
    width, height = _image_size(image)
    if not faces:
        min_face = _check_min_face_size(min_face_size, "pick_face")
        raise FaceNotFoundError(
            f"no face found in the reference image ({width}x{height} px); the detector finds upright faces of "
            f"at least {min_face:g} px, frontal or moderately turned: use a clearer portrait, or {MASK_HINT}"
        )
    if index >= len(faces):
        raise ValueError(
            f"pick_face: face {index} was asked for, but {len(faces)} face(s) were found in the {width}x{height} "
            f"image (indices 0..{len(faces) - 1}, largest first); pick one of those, or {MASK_HINT}"
        )
    return faces[index]


def largest_face(image, *, min_face_size: float | None = None) -> DetectedFace:
    """The largest face of `image` (see `detect_faces`); raises FaceNotFoundError when none."""
    return pick_face(image, 0, min_face_size=min_face_size)
