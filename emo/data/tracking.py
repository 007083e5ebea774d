"""Face tracking over a video and its cutting into clips, for `emo prepare`.

Per frame, OpenCV's Haar cascade (`emo.faces.haar.detect_face_boxes`) finds faces; the tracker keeps
the one that overlaps the previous box most (else the largest), fills short misses by linear
interpolation, and smooths the box path, since Haar boxes jitter by a few pixels from frame to
frame and that jitter would read as head motion. A clip is a stretch of frames with a tracked
face, no scene cut and no jump of the box; each clip gets one square crop around the union of its
face boxes (EMO's face region is the union of the clip's boxes, paper §3.2 "Face Locator").
Boxes are float (x0, y0, x1, y1) pixels, NaN where there is no face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..faces.haar import detect_face_boxes

logger = logging.getLogger(__name__)


def detect(frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Faces in one uint8 RGB frame [H, W, 3], largest first."""
    return detect_face_boxes(torch.from_numpy(frame).float().div_(255.0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pick_face(candidates, previous: np.ndarray | None) -> np.ndarray | None:
    """The candidate overlapping `previous` most, or the largest when none overlaps."""
    if not candidates:
        return None
    boxes = [np.asarray(c, dtype=np.float64) for c in candidates]
    if previous is not None:
        overlaps = [_iou(b, previous) for b in boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0:
            return boxes[best]
    return boxes[0]  # detect_face_boxes sorts largest first


def fill_gaps(boxes: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly interpolate runs of up to `max_gap` NaN rows between two detected boxes.

    boxes: (F, 4) with NaN rows for misses. Longer gaps, and misses at either end, stay NaN.
    """
    out = boxes.copy()
    found = np.flatnonzero(~np.isnan(boxes[:, 0]))
    for a, b in zip(found[:-1], found[1:]):
        if 1 < b - a <= max_gap + 1:
            w = (np.arange(a + 1, b) - a)[:, None] / (b - a)
            out[a + 1:b] = boxes[a] * (1 - w) + boxes[b] * w
    return out


def smooth(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of each coordinate over `window` frames (odd), within runs of
    valid rows only (a box never averages across a gap)."""
    if window <= 1:
        return boxes.copy()
    out = boxes.copy()
    valid = ~np.isnan(boxes[:, 0])
    half = window // 2
    for start, end in runs(valid):
        run = boxes[start:end]
        padded = np.concatenate([np.repeat(run[:1], half, 0), run, np.repeat(run[-1:], half, 0)])
        kernel = np.ones(window) / window
        out[start:end] = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], 1)
    return out


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in a 1-D bool array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def scene_cuts(thumbnails: np.ndarray, threshold: float) -> np.ndarray:
    """(F,) bool, True where frame i starts a new shot: the mean absolute difference of its
    small grey thumbnail (values 0..1) from frame i-1's exceeds `threshold`."""
    cuts = np.zeros(len(thumbnails), dtype=bool)
    if len(thumbnails) > 1:
        diff = np.abs(np.diff(thumbnails.astype(np.float32), axis=0)).mean(axis=(1, 2))
        cuts[1:] = diff > threshold
    return cuts


def thumbnail(frame: np.ndarray, side: int = 32) -> np.ndarray:
    """A side x side grey version of an RGB uint8 frame, float32 0..1 (for cut detection)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def box_jumps(boxes: np.ndarray, max_shift: float) -> np.ndarray:
    """(F,) bool, True where the box centre moved more than `max_shift` box widths since the
    previous frame: a cut the thumbnails missed, or the tracker switching to another face."""
    jumps = np.zeros(len(boxes), dtype=bool)
    if len(boxes) > 1:
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        width = boxes[:, 2] - boxes[:, 0]
        shift = np.linalg.norm(np.diff(centre, axis=0), axis=1) / np.maximum(width[:-1], 1e-6)
        jumps[1:] = np.nan_to_num(shift, nan=0.0) > max_shift
    return jumps


def find_clips(valid: np.ndarray, breaks: np.ndarray, min_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Clips [start, end): runs of `valid` frames, split where `breaks` is True and into pieces
    of at most `max_frames`; pieces shorter than `min_frames` are dropped."""
    clips = []
    for start, end in runs(valid):
        cut_points = [start] + [i for i in range(start + 1, end) if breaks[i]] + [end]
        for a, b in zip(cut_points[:-1], cut_points[1:]):
            pieces = max(1, -(-(b - a) // max_frames))
            edges = np.linspace(a, b, pieces + 1).round().astype(int)
            for s, e in zip(edges[:-1], edges[1:]):
                if e - s >= min_frames:
                    clips.append((int(s), int(e)))
    return clips


@dataclass(frozen=True)
class Crop:
    """A square crop of the source frame: top-left corner and side, in source pixels."""

    x: int
    y: int
    side: int

    def apply(self, frame: np.ndarray, size: int) -> np.ndarray:
        """Cut the square out of an RGB uint8 frame [H, W, 3] and resize it to size x size."""
        piece = frame[self.y:self.y + self.side, self.x:self.x + self.side]
        interpolation = cv2.INTER_AREA if self.side > size else cv2.INTER_CUBIC
        return cv2.resize(piece, (size, size), interpolation=interpolation)

    def map_boxes(self, boxes: np.ndarray, size: int) -> np.ndarray:
        """Source-pixel boxes (F, 4) -> boxes in the pixels of the size x size crop."""
        scale = size / self.side
        offset = np.array([self.x, self.y, self.x, self.y], dtype=np.float64)
        return np.clip((boxes - offset) * scale, 0, size)


def crop_around(boxes: np.ndarray, width: int, height: int, margin: float) -> Crop:
    """The square crop for a clip: centred on the union of its face boxes, with side the union's
    longer side plus `margin` times the median face size (room for hair, chin and shoulders), moved
    inside the frame, and shrunk to the frame's short side if it does not fit.

    EMO crops its training videos to 512x512 around the face (paper §4.1); the margin is ours
    (0.8 makes the face about half the crop's width, like the paper's examples).
    """
    union = np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])
    face = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    side = max(union[2] - union[0], union[3] - union[1]) + margin * face
    side = int(round(min(side, width, height)))
    cx, cy = (union[0] + union[2]) / 2, (union[1] + union[3]) / 2
    x = int(round(min(max(cx - side / 2, 0), width - side)))
    y = int(round(min(max(cy - side / 2, 0), height - side)))
    return Crop(x=x, y=y, side=side)
