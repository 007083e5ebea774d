"""Synthetic framings of a real face: scikit-image's astronaut photo (Eileen Collins, NASA, public
domain; in the scikit-image wheel) scaled, placed, turned, mirrored and re-lit on 16:9, 9:16 and
square canvases over real photos (coffee, rocket), with the face's box known.

Used by tests/emo/faces/test_detect.py (a deterministic subset) and bench/face_detection.py
(the full grid, with OpenCV's Haar cascade for comparison). Everything is made here from
package data: no download.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# The astronaut's face in the 512x512 photo: facenet-pytorch 2.6.0's MTCNN box (an independent
# implementation of the same detector; min_face_size 40, thresholds 0.6/0.7/0.7), rounded to 0.1 px.
ASTRONAUT_FACE_BOX = (180.3, 60.7, 268.4, 172.2)

CANVASES = {"16:9 1920x1080": (1920, 1080), "16:9 640x360": (640, 360), "9:16 1080x1920": (1080, 1920)}
# Face height (of the reference box) in canvas pixels; "large" is 80% of the canvas' short side.
FACE_HEIGHTS = (40, 64, 128, 256, "large")
# Where the face's centre goes, as fractions of the canvas (clamped so the face stays inside).
PLACEMENTS = {
    "centre": (0.5, 0.5),
    "top-left": (0.1, 0.12),
    "top-right": (0.9, 0.12),
    "bottom-left": (0.1, 0.88),
    "bottom-right": (0.9, 0.88),
    "off-centre": (0.33, 0.42),
}
ROTATIONS = (0.0, 15.0, -15.0)  # degrees, counter-clockwise
FLIPS = (False, True)  # mirrored left-right
LIGHTING = {"normal": (1.0, 0.0), "dim": (0.55, 0.0), "bright": (1.3, 25.0)}  # gain, offset (0..255 levels)
BACKGROUNDS = ("coffee", "rocket")


@dataclass(frozen=True)
class Framing:
    canvas: str
    face_height: int | str
    placement: str
    rotation: float = 0.0
    flip: bool = False
    lighting: str = "normal"
    background: str = "coffee"

    @property
    def name(self) -> str:
        return (f"{self.canvas} face {self.face_height} {self.placement} rot {self.rotation:+g} "
                f"{'flip ' if self.flip else ''}{self.lighting} on {self.background}")

    def face_pixels(self) -> float:
        width, height = CANVASES[self.canvas]
        return 0.8 * min(width, height) if self.face_height == "large" else float(self.face_height)

    def render(self) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """(RGB uint8 image [H, W, 3], the face's box (x0, y0, x1, y1) in its pixels)."""
        photo = _photo("astronaut")
        width, height = CANVASES[self.canvas]
        fx0, fy0, fx1, fy1 = ASTRONAUT_FACE_BOX
        scale = self.face_pixels() / (fy1 - fy0)
        side = max(1, round(photo.shape[0] * scale))
        scale = side / photo.shape[0]  # the scale the rounded size really gives
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC  # no aliasing when shrinking
        scaled = cv2.resize(photo, (side, side), interpolation=interpolation)
        centre = np.array([(fx0 + fx1) / 2, (fy0 + fy1) / 2]) * scale
        if self.flip:
            scaled = np.ascontiguousarray(scaled[:, ::-1])
            centre[0] = side - centre[0]
        face_w, face_h = (fx1 - fx0) * scale, (fy1 - fy0) * scale
        px, py = PLACEMENTS[self.placement]
        # Keep the whole face (box and a 2% margin) on the canvas.
        margin_x, margin_y = face_w / 2 + 0.02 * width, face_h / 2 + 0.02 * height
        target = np.array([min(max(px * width, margin_x), width - margin_x),
                           min(max(py * height, margin_y), height - margin_y)])
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), self.rotation, 1.0)
        matrix[:, 2] += target - centre
        canvas = cv2.resize(_photo(self.background), (width, height), interpolation=cv2.INTER_AREA)
        canvas = cv2.warpAffine(scaled, matrix, (width, height), dst=canvas, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_TRANSPARENT)
        gain, offset = LIGHTING[self.lighting]
        canvas = np.clip(canvas.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)
        box = (target[0] - face_w / 2, target[1] - face_h / 2, target[0] + face_w / 2, target[1] + face_h / 2)
        return canvas, tuple(float(v) for v in box)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    image.setflags(write=False)
    return image


def full_grid() -> list[Framing]:
    """Every combination (3 canvases x 5 sizes x 6 placements x 3 rotations x 2 flips x 3 lights)."""
    return [
        Framing(canvas, size, place, rot, flip, light, BACKGROUNDS[k % len(BACKGROUNDS)])
        for k, (canvas, size, place, rot, flip, light) in enumerate(
            itertools.product(CANVASES, FACE_HEIGHTS, PLACEMENTS, ROTATIONS, FLIPS, LIGHTING)
        )
    ]


def sample_grid() -> list[Framing]:
    """One framing per canvas x size x placement (90); rotation, flip, lighting and background
    cycle with the case number so each level appears at every canvas and size."""
    cases = []
    for k, (canvas, size, place) in enumerate(itertools.product(CANVASES, FACE_HEIGHTS, PLACEMENTS)):
        cases.append(Framing(
            canvas, size, place,
            rotation=ROTATIONS[k % 3],
            flip=FLIPS[(k // 3) % 2],
            lighting=tuple(LIGHTING)[(k // 2) % 3],
            background=BACKGROUNDS[(k // 5) % 2],
        ))
    return cases


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


LFW_ENLARGE = 4  # 25 px crops -> 100 px
LFW_CONTEXT = 50  # px of replicated border on each side, so the face is not at the image edge


def lfw_cases():
    """scikit-image's LFW subset: 100 face crops then 100 non-face crops, 25x25 grayscale, real
    photos of many people (Labeled Faces in the Wild). Yields (index, RGB uint8 image, is_face,
    the crop's box in the image): each crop enlarged 4x (cubic) inside a replicated border."""
    from skimage import data

    crops = data.lfw_subset()  # [200, 25, 25] float 0..1
    for index, crop in enumerate(crops):
        size = crop.shape[0] * LFW_ENLARGE
        gray = cv2.resize((crop * 255).round().astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        gray = cv2.copyMakeBorder(gray, *(LFW_CONTEXT,) * 4, cv2.BORDER_REPLICATE)
        box = (float(LFW_CONTEXT), float(LFW_CONTEXT), float(LFW_CONTEXT + size), float(LFW_CONTEXT + size))
        yield index, np.repeat(gray[:, :, None], 3, axis=2), index < 100, box
