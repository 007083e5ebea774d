"""Head-rotation speed per frame, for EMO's speed layers (paper §3.2 "Speed Layers").

The paper takes the head's rotation speed from a head-pose estimate. A real pose estimator needs
weights this library does not ship (and may not download), so the built-in estimators measure an
honest *proxy* from the face's image motion, and the estimator is a plug-in:

- ``face-align`` (default): the face region (box + 10 %) of each frame is aligned to the previous
  frame's with OpenCV's ECC maximisation (`findTransformECC`) under a Euclidean motion (rotation +
  translation). Its rotation is the in-plane rotation (roll), measured directly. Yaw and pitch are
  not observable from 2-D motion alone; for a head turning about the neck the face centre moves by
  about r * dθ (r = half the face width), so the fitted displacement of the face centre, divided by
  r, stands in for them. Speed = sqrt(roll² + (|displacement| / r)²), in degrees per frame. On
  `emo synth` talkers (a known tilt about the neck, 64 px) it correlates above 0.9 with the true
  rate, and its mean is the formula's sqrt(1 + (neck / r)²) times it: the face centre's swing is
  read as a further turn. A step where ECC does not converge falls back to box motion.
- ``box-motion``: the same formula on the smoothed face-box centres (no roll); needs no texture,
  noisier.

Limits, stated plainly: camera motion, body sway and any translation of the head count as
rotation; a turn seen mostly as foreshortening (yaw in place, face centre fixed) is under-counted;
zoom is ignored. Speeds are therefore comparable *within* one dataset (the buckets are computed
from its own statistics) but are not true angles. A better estimator (6DRepNet, a 3DMM fit, ...)
plugs in by name: `register_speed_estimator("name")(factory)`, or `--speed-estimator
package.module:factory`; it is called as ``estimator(frames, boxes)`` with frames uint8
[F, S, S, 3] (a memory map) and face boxes float (F, 4) in the same pixels, and returns float32 (F,)
degrees per frame at the dataset's frame rate (frame 0 repeats frame 1's value).
"""

from __future__ import annotations

import importlib
import logging
import math
from typing import Callable, Protocol

import cv2
import numpy as np

logger = logging.getLogger(__name__)


class HeadSpeedEstimator(Protocol):
    name: str

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...


SPEED_ESTIMATORS: dict[str, Callable[[], HeadSpeedEstimator]] = {}


def register_speed_estimator(name: str):
    """Decorator: register a factory (no arguments) that returns an estimator."""
    def register(factory):
        SPEED_ESTIMATORS[name] = factory
        return factory
    return register


def get_speed_estimator(spec: str) -> HeadSpeedEstimator:
    """A registered estimator by name, or one from an import path ``package.module:factory``."""
    if spec in SPEED_ESTIMATORS:
        return SPEED_ESTIMATORS[spec]()
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"speed estimator {spec!r} could not be imported: {error}") from error
        estimator = factory()
        if not getattr(estimator, "name", None):
            estimator.name = spec
        return estimator
    raise ValueError(
        f"unknown speed estimator {spec!r}; choose one of {sorted(SPEED_ESTIMATORS)} or give an import "
        "path 'package.module:factory'"
    )


def _speed_degrees(roll: np.ndarray, shift: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Angular speed (degrees) from roll (radians) and face-centre shift (pixels) per frame."""
    return np.degrees(np.sqrt(roll ** 2 + (shift / np.maximum(radius, 1e-6)) ** 2)).astype(np.float32)


def _finish(per_step: np.ndarray, num_frames: int) -> np.ndarray:
    """Speeds between frames (F-1,) -> per frame (F,): frame i gets the step from i-1 to i, frame 0
    repeats frame 1; then a 3-tap median drops single-frame tracker glitches."""
    if num_frames <= 1:
        return np.zeros(num_frames, dtype=np.float32)
    speeds = np.concatenate([per_step[:1], per_step]).astype(np.float32)
    if num_frames >= 3:
        padded = np.concatenate([speeds[:1], speeds, speeds[-1:]])
        speeds = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0).astype(np.float32)
    return speeds


def _box_geometry(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    radius = (boxes[:, 2] - boxes[:, 0]) / 2
    return centre, radius


class BoxMotionSpeed:
    """Speed from the motion of the face-box centre (see the module docstring)."""

    name = "box-motion"

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64)
        centre, radius = _box_geometry(boxes)
        shift = np.linalg.norm(np.diff(centre, axis=0), axis=1)
        step = _speed_degrees(np.zeros_like(shift), shift, radius[1:])
        return _finish(step, len(boxes))


class FaceAlignSpeed:
    """Speed from aligning the face region of consecutive frames (see the module docstring)."""

    name = "face-align"

    def __init__(self, max_side: int = 128, margin: float = 0.1):
        self.max_side = max_side  # the face region is aligned at most this large (speed, not accuracy)
        self.margin = margin  # the box is grown by this fraction per side: the head's outline helps
        self._fallback = BoxMotionSpeed()

    def _step(self, frame0: np.ndarray, frame1: np.ndarray, box: np.ndarray) -> tuple[float, float] | None:
        """(roll radians, face-centre shift pixels) from frame0 to frame1, or None if ECC fails."""
        h, w = frame0.shape[:2]
        grow_x, grow_y = self.margin * (box[2] - box[0]), self.margin * (box[3] - box[1])
        x0, y0 = max(int(box[0] - grow_x), 0), max(int(box[1] - grow_y), 0)
        x1, y1 = min(int(math.ceil(box[2] + grow_x)), w), min(int(math.ceil(box[3] + grow_y)), h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        grey = [cv2.cvtColor(np.ascontiguousarray(f[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
                for f in (frame0, frame1)]
        scale = min(1.0, self.max_side / max(x1 - x0, y1 - y0))
        if scale < 1.0:
            grey = [cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for g in grey]
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
        try:
            _, warp = cv2.findTransformECC(grey[0], grey[1], warp, cv2.MOTION_EUCLIDEAN, criteria, None, 3)
        except cv2.error:  # no convergence (a cut, a blur, a flat region)
            return None
        roll = math.atan2(float(warp[1, 0]), float(warp[0, 0]))
        centre = np.array([(box[0] + box[2]) / 2 - x0, (box[1] + box[3]) / 2 - y0]) * scale
        shift = float(np.linalg.norm(warp[:, :2] @ centre + warp[:, 2] - centre)) / scale
        return roll, shift

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64)
        num = len(boxes)
        fallback = self._fallback(frames, boxes)
        if num <= 1:
            return fallback
        _, radius = _box_geometry(boxes)
        steps = np.zeros(num - 1, dtype=np.float32)
        failed = 0
        previous = np.asarray(frames[0])
        for i in range(1, num):
            current = np.asarray(frames[i])
            result = self._step(previous, current, boxes[i - 1])
            if result is None:
                steps[i - 1] = fallback[i]  # box motion for this step
                failed += 1
            else:
                roll, shift = result
                steps[i - 1] = _speed_degrees(np.array([roll]), np.array([shift]), radius[i - 1:i])[0]
            previous = current
        if failed:
            logger.debug("face-align: %d of %d steps did not converge; used box motion", failed, num - 1)
        return _finish(steps, num)


register_speed_estimator("face-align")(FaceAlignSpeed)
register_speed_estimator("box-motion")(BoxMotionSpeed)


def compute_speed_buckets(speeds: np.ndarray, count: int) -> tuple[list[float], list[float]]:
    """Bucket centres and radii for the speed encoder from the speeds of a whole dataset.

    Centres are the (j + 0.5) / count quantiles, so each bucket holds about the same number of
    frames (dense where speeds are common); radius j is the larger gap to a neighbouring centre,
    so tanh((s - c) / r * 3) moves from -1 to 1 across the space between buckets (the paper gives
    the formula but not how it chose centres and radii: this choice is ours).
    """
    values = np.asarray(speeds, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("compute_speed_buckets: no finite speeds; the dataset has no usable frames")
    if count < 1:
        raise ValueError(f"compute_speed_buckets: need at least one bucket, got {count}")
    centres = np.quantile(values, (np.arange(count) + 0.5) / count)
    floor = max(1e-3, 1e-3 * float(values.max() - values.min()))
    if count == 1:
        radii = np.array([max(float(values.std()), floor)])
    else:
        gaps = np.diff(centres)
        left = np.concatenate([[gaps[0]], gaps])
        right = np.concatenate([gaps, [gaps[-1]]])
        radii = np.maximum(np.maximum(left, right), floor)
    if np.ptp(centres) < floor:
        logger.warning("speed buckets: the dataset's speeds hardly vary (%.4g..%.4g deg/frame); the speed "
                       "layers cannot learn much from it", values.min(), values.max())
    return [round(float(c), 6) for c in centres], [round(float(r), 6) for r in radii]
