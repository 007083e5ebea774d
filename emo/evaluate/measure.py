"""Measurements of a talking-head video from its pixels alone (plus the reference it was made from).

Every measurement needs only what a generation run had as input: the reference frame and its
face box. Nothing here reads a talker's ground truth, so the same code measures generated videos
and ground-truth videos (the tests check that on ground truth it recovers the true signals).

Per frame:

1. **Pose** (:func:`register`): the rigid transform (rotation + translation) that best aligns the
   frame with the reference, by OpenCV's ECC image alignment on grey levels, tracked from frame
   to frame. Its rotation is the head's roll relative to the reference, in degrees, positive =
   counter-clockwise on screen (`emo.synthetic`'s convention).
2. **Mouth opening** (:func:`mouth_darkness`): the frame is warped back into the reference's
   pose, then the dark pixels of the mouth region are counted: darkness = 1 where the luminance is
   below 0.25 x the skin's, 0 above 0.6 x (the lips, the nose shade), linear between, summed over
   the region and divided by the face box's area. It grows with the area of the open mouth.
3. **Colour histogram** and **silhouette** for identity (see `metrics.py`).

Frames are uint8 [F, S, S, 3] (or float 0..1, converted); boxes are (x0, y0, x1, y1) pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Where the mouth is, as fractions of the reference's face box (x: centred, half-width; y: top,
# bottom). The synthetic faces put the lips between 0.56 and 0.92 of the box height.
MOUTH_REGION_HALF_WIDTH = 0.3
MOUTH_REGION_TOP = 0.55
MOUTH_REGION_BOTTOM = 0.97
# Luminance ratios (pixel / skin) for the darkness ramp of an open mouth.
DARK_FULL = 0.25
DARK_NONE = 0.6
# Colour distance (RGB, 0..255) from the background above which a pixel belongs to the head.
FOREGROUND_DISTANCE = 40.0


def as_uint8_frames(frames, operation: str = "measure") -> np.ndarray:
    """uint8 [F, H, W, 3] from uint8 or float 0..1 frames (numpy or torch), one frame or many."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{operation}: expected frames [F, H, W, 3], got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.round(frames.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def luminance(frames: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB uint8 [..., 3] -> float32 [...], 0..255."""
    return np.asarray(frames)[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def border_colour(frame: np.ndarray, width: int = 2) -> np.ndarray:
    """Median colour of the frame's outer `width` pixels: the background. float32 (3,)."""
    border = np.concatenate([frame[:width].reshape(-1, 3), frame[-width:].reshape(-1, 3),
                             frame[:, :width].reshape(-1, 3), frame[:, -width:].reshape(-1, 3)])
    return np.median(border, axis=0).astype(np.float32)


def dominant_colour(pixels: np.ndarray, levels: int = 8) -> np.ndarray:
    """The most common colour of pixels [N, 3] uint8: the median of the most populated of
    levels^3 colour cells. float32 (3,)."""
    cells = (pixels.astype(np.int32) * levels // 256) @ np.array([levels * levels, levels, 1])
    mode = np.bincount(cells, minlength=levels ** 3).argmax()
    return np.median(pixels[cells == mode], axis=0).astype(np.float32)


def foreground(frame: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Bool [H, W]: pixels farther than FOREGROUND_DISTANCE from the background colour (the
    frame's border median unless given): the head's silhouette on a plain background."""
    background = border_colour(frame) if background is None else background
    distance = np.linalg.norm(frame.astype(np.float32) - background, axis=-1)
    return distance > FOREGROUND_DISTANCE


@dataclass
class ReferenceLayout:
    """What the measurements learn from the reference frame and its face box."""

    size: tuple[int, int]  # (H, W)
    face_box: tuple[float, float, float, float]
    skin: np.ndarray  # (3,) the dominant colour inside the face box
    background: np.ndarray  # (3,) the border's median colour
    mouth_region: tuple[int, int, int, int]  # pixels (x0, y0, x1, y1)
    grey: np.ndarray  # float32 [H, W], the reference's luminance, for alignment

    @property
    def skin_luminance(self) -> float:
        return max(float(luminance(self.skin)), 1.0)

    @classmethod
    def from_reference(cls, reference, face_box) -> "ReferenceLayout":
        frame = as_uint8_frames(reference, "ReferenceLayout")[0]
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in face_box)
        if not (0 <= x0 < x1 <= w + 1 and 0 <= y0 < y1 <= h + 1):
            raise ValueError(f"ReferenceLayout: face box {face_box} does not lie inside the {w}x{h} reference")
        inner = frame[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))].reshape(-1, 3)
        bw, bh = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2
        region = (max(0, int(round(cx - MOUTH_REGION_HALF_WIDTH * bw))), max(0, int(round(y0 + MOUTH_REGION_TOP * bh))),
                  min(w, int(round(cx + MOUTH_REGION_HALF_WIDTH * bw))), min(h, int(round(y0 + MOUTH_REGION_BOTTOM * bh))))
        return cls(size=(h, w), face_box=(x0, y0, x1, y1), skin=dominant_colour(inner),
                   background=border_colour(frame), mouth_region=region, grey=luminance(frame))


# --------------------------------------------------------------------------------------------------
# Pose
# --------------------------------------------------------------------------------------------------


def _ecc(template: np.ndarray, image: np.ndarray, warp: np.ndarray) -> tuple[float, np.ndarray] | None:
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
    try:
        score, found = cv2.findTransformECC(template, image, warp.astype(np.float32).copy(),
                                            cv2.MOTION_EUCLIDEAN, criteria, None, 3)
    except cv2.error:  # ECC raises when it diverges or the image has no texture
        return None
    if not np.all(np.isfinite(found)):
        return None
    return float(score), found


def _rotation_warp(degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """ECC warp (template -> image coordinates) of a head turned by `degrees` about `centre`."""
    # A counter-clockwise turn on screen (y down) maps p -> c + [[cos, sin], [-sin, cos]] (p - c).
    t = math.radians(degrees)
    rotation = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    c = np.asarray(centre)
    return np.hstack([rotation, (c - rotation @ c)[:, None]]).astype(np.float32)


def warp_angle(warp: np.ndarray) -> float:
    """Rotation in degrees (counter-clockwise on screen) of an ECC Euclidean warp."""
    return math.degrees(math.atan2(-float(warp[1, 0]), float(warp[0, 0])))


@dataclass
class Registration:
    warps: np.ndarray  # float32 [F, 2, 3]: reference pixel -> frame pixel
    angles: np.ndarray  # float32 [F], degrees relative to the reference, counter-clockwise positive
    scores: np.ndarray  # float32 [F], ECC correlation 0..1 (0 where alignment failed)
    failures: int  # frames where no alignment was found (the previous warp was kept)


def register(frames, layout: ReferenceLayout, search_degrees: float = 30.0) -> Registration:
    """Align every frame with the reference (rigid: rotation + translation).

    Each frame starts from the previous frame's warp (heads move little between frames); when
    that does not converge to a good match (correlation < 0.8), rotations about the face centre
    every 10 degrees within +-search_degrees are tried and the best kept."""
    frames = as_uint8_frames(frames, "register")
    # Grey levels below the lips' are raised to DARK_NONE x the skin's: the open mouth changes
    # more than anything else between frames and, left in, pulls a wide-open mouth's alignment
    # off by degrees. (Masking the mouth instead removes the lips' useful edges as well.)
    floor = DARK_NONE * layout.skin_luminance

    def prepare(grey: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(np.maximum(grey, floor), (0, 0), 0.7)

    template = prepare(layout.grey)
    x0, y0, x1, y1 = layout.face_box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    identity = np.eye(2, 3, dtype=np.float32)
    warps = np.empty((len(frames), 2, 3), dtype=np.float32)
    scores = np.zeros(len(frames), dtype=np.float32)
    previous, failures = identity, 0
    for index, frame in enumerate(frames):
        image = prepare(luminance(frame))
        best = _ecc(template, image, previous)
        if best is None or best[0] < 0.8:
            for degrees in np.arange(-search_degrees, search_degrees + 1e-6, 10.0):
                found = _ecc(template, image, _rotation_warp(float(degrees), centre))
                if found is not None and (best is None or found[0] > best[0]):
                    best = found
        if best is None:
            failures += 1
            warps[index] = previous
            continue
        scores[index], warps[index] = best
        previous = warps[index]
    if failures:
        logger.info("register: %d of %d frames could not be aligned with the reference", failures, len(frames))
    angles = np.array([warp_angle(w) for w in warps], dtype=np.float32)
    return Registration(warps=warps, angles=angles, scores=scores, failures=failures)


def align_to_reference(frames, warps: np.ndarray) -> np.ndarray:
    """Warp each frame back into the reference's pose: uint8 [F, H, W, 3]; uncovered pixels take
    the nearest edge pixel."""
    frames = as_uint8_frames(frames, "align_to_reference")
    h, w = frames.shape[1:3]
    return np.stack([cv2.warpAffine(frame, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE) for frame, warp in zip(frames, warps)])


# --------------------------------------------------------------------------------------------------
# Mouth
# --------------------------------------------------------------------------------------------------


def mouth_darkness(aligned, layout: ReferenceLayout) -> np.ndarray:
    """Mouth opening per frame from frames in the reference's pose: float32 [F], the dark area of
    the mouth region as a fraction of the face box area (see the module docstring)."""
    aligned = as_uint8_frames(aligned, "mouth_darkness")
    x0, y0, x1, y1 = layout.mouth_region
    ratio = luminance(aligned[:, y0:y1, x0:x1]) / layout.skin_luminance
    darkness = np.clip((DARK_NONE - ratio) / (DARK_NONE - DARK_FULL), 0.0, 1.0)
    fx0, fy0, fx1, fy1 = layout.face_box
    return (darkness.sum(axis=(1, 2)) / ((fx1 - fx0) * (fy1 - fy0))).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------------


def colour_histogram(pixels: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised colour histogram of uint8 pixels [..., 3] with bins^3 cells, float64 [bins^3].

    Each channel value is split linearly between its two nearest bin centres (soft binning), so a
    small colour shift moves mass smoothly instead of jumping across a bin edge."""
    values = np.clip(pixels.reshape(-1, 3).astype(np.float64) / 256.0 * bins - 0.5, 0, bins - 1)
    low = np.floor(values)
    weight_high = values - low
    low = low.astype(np.int64)
    histogram = np.zeros(bins ** 3)
    for corner in range(8):
        offsets = np.array([(corner >> k) & 1 for k in (2, 1, 0)])
        index = low + offsets
        weight = np.prod(np.where(offsets == 1, weight_high, 1 - weight_high), axis=1)
        valid = np.all((index >= 0) & (index < bins), axis=1)
        flat = (index[valid] * np.array([bins * bins, bins, 1])).sum(axis=1)
        np.add.at(histogram, flat, weight[valid])
    return histogram / max(histogram.sum(), 1e-12)
