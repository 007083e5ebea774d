"""The quality metrics of `emo evaluate`, from measurements of the pixels (see `measure.py`).

- lip sync: Pearson correlation between the measured mouth opening and the true one (a function
  of the audio), at every audio-video offset within +-max_offset frames; the best offset should
  be 0;
- head motion: mean absolute change of the measured head angle per frame (degrees per frame),
  and speed control: Spearman correlation between requested speeds and measured motion;
- identity: colour (histogram) and shape (silhouette) distance of the video's frames, brought into
  the reference's pose, to the reference;
- seam stability: frame-to-frame change at clip seams relative to the change of the frames
  around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import measure


def pearson(x, y) -> float:
    """Pearson correlation of two equal-length series; 0.0 when either does not vary (a mouth
    that never moves is not in sync with anything)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson: expected two series of one length, got shapes {x.shape} and {y.shape}")
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if denominator < 1e-12:
        return 0.0
    return float((x * y).sum() / denominator)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties get their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties averaged)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return pearson(_ranks(x), _ranks(y))


# --------------------------------------------------------------------------------------------------
# Lip sync
# --------------------------------------------------------------------------------------------------


@dataclass
class LipSync:
    correlation: float  # at offset 0
    best_offset: int  # frames; > 0: the video lags the audio
    best_correlation: float
    by_offset: dict[int, float] = field(repr=False)


def offset_correlations(measured, truth, max_offset: int) -> dict[int, float]:
    """{offset: corr(measured[t], truth[t - offset])} for offsets -max_offset..max_offset, over
    the frames where both exist. A positive offset compares each frame with earlier audio."""
    measured = np.asarray(measured, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if measured.shape != truth.shape or measured.ndim != 1:
        raise ValueError(f"lip sync: measured {measured.shape} and true {truth.shape} mouth openings must be "
                         "series of one length")
    n = len(measured)
    if n < 2 * max_offset + 3:
        raise ValueError(f"lip sync: {n} frames are too few for offsets of +-{max_offset} frames; "
                         f"give at least {2 * max_offset + 3} frames (a longer clip)")
    out = {}
    for offset in range(-max_offset, max_offset + 1):
        if offset >= 0:
            out[offset] = pearson(measured[offset:], truth[:n - offset])
        else:
            out[offset] = pearson(measured[:n + offset], truth[-offset:])
    return out


def best_offset(by_offset: dict[int, float]) -> int:
    """The offset with the highest correlation (the smallest |offset| among equals)."""
    return max(by_offset, key=lambda k: (round(by_offset[k], 9), -abs(k)))


def lip_sync(measured, truth, max_offset: int = 5) -> LipSync:
    by_offset = offset_correlations(measured, truth, max_offset)
    offset = best_offset(by_offset)
    return LipSync(correlation=by_offset[0], best_offset=offset, best_correlation=by_offset[offset],
                   by_offset=by_offset)


# --------------------------------------------------------------------------------------------------
# Head motion and speed
# --------------------------------------------------------------------------------------------------


def head_motion(angles) -> float:
    """Mean |angle[f] - angle[f - 1]|, degrees per frame."""
    angles = np.asarray(angles, dtype=np.float64)
    if len(angles) < 2:
        raise ValueError("head_motion: need at least 2 frames")
    return float(np.abs(np.diff(angles)).mean())


@dataclass
class SpeedControl:
    speeds: list[float]
    motion: list[float]  # measured degrees per frame, one per speed
    spearman: float
    increasing: bool  # strictly increasing with the speed
    # Least-squares slope of the motion on the speed: measured degrees per frame per unit of
    # requested speed (the synthetic talkers' truth is ~1). Unlike the rank, it tells a model
    # that follows the speed from one whose motion only wobbles by frame-to-frame noise.
    gain: float


def speed_gain(speeds, motion) -> float:
    """Slope of the least-squares line through (speed, motion)."""
    x, y = np.asarray(speeds, dtype=np.float64), np.asarray(motion, dtype=np.float64)
    spread = float(((x - x.mean()) ** 2).sum())
    if spread == 0.0:
        raise ValueError(f"speed_gain: the speeds must not all be equal, got {list(speeds)}")
    return float(((x - x.mean()) * (y - y.mean())).sum() / spread)


def speed_control(speeds, motion) -> SpeedControl:
    speeds = [float(s) for s in speeds]
    motion = [float(m) for m in motion]
    if len(speeds) != len(motion) or len(speeds) < 2:
        raise ValueError(f"speed_control: need one motion per speed and at least 2 speeds, got {speeds} / {motion}")
    order = np.argsort(speeds)
    sorted_motion = np.asarray(motion)[order]
    increasing = bool(np.all(np.diff(sorted_motion) > 0) and len(set(speeds)) == len(speeds))
    # Rounded so that a perfect ranking reads exactly 1 (not 0.9999999999999998).
    return SpeedControl(speeds=speeds, motion=motion, spearman=round(spearman(speeds, motion), 9),
                        increasing=increasing, gain=speed_gain(speeds, motion))


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------


@dataclass
class IdentityDistance:
    colour: float  # mean total-variation distance of colour histograms, 0..1
    shape: float  # mean 1 - IoU of the head silhouettes, 0..1
    combined: float  # (colour + shape) / 2


def identity_distance(aligned, reference, region: tuple[int, int, int, int]) -> IdentityDistance:
    """Distance of frames (in the reference's pose, see `measure.align_to_reference`) to a
    reference frame.

    colour: total variation (half the L1 distance) between the soft colour histograms of `region`
    (x0, y0, x1, y1 pixels: the face and its surroundings) in each frame and in the reference;
    shape: 1 - IoU of the head silhouette (pixels unlike the image's own border colour) of each
    frame and of the reference. Both averaged over the frames."""
    frames = measure.as_uint8_frames(aligned, "identity_distance")
    reference = measure.as_uint8_frames(reference, "identity_distance")[0]
    if frames.shape[1:] != reference.shape:
        raise ValueError(f"identity_distance: frames are {frames.shape[1:]} but the reference is {reference.shape}")
    x0, y0, x1, y1 = region
    reference_histogram = measure.colour_histogram(reference[y0:y1, x0:x1])
    reference_shape = measure.foreground(reference)
    colours, shapes = [], []
    for frame in frames:
        histogram = measure.colour_histogram(frame[y0:y1, x0:x1])
        colours.append(0.5 * np.abs(histogram - reference_histogram).sum())
        silhouette = measure.foreground(frame)
        union = np.logical_or(silhouette, reference_shape).sum()
        shapes.append(1.0 - (np.logical_and(silhouette, reference_shape).sum() / union if union else 1.0))
    colour, shape = float(np.mean(colours)), float(np.mean(shapes))
    return IdentityDistance(colour=colour, shape=shape, combined=(colour + shape) / 2)


# --------------------------------------------------------------------------------------------------
# Seams
# --------------------------------------------------------------------------------------------------


@dataclass
class SeamStability:
    seam_difference: float  # mean |frame[t] - frame[t - 1]| (0..1) where t starts a clip
    around_difference: float  # the same for the frames next to the seams (up to 2 either side)
    inside_difference: float  # the same for every step inside the clips
    ratio: float  # seam_difference / around_difference; 1 = no visible seam
    seams: int


def frame_differences(frames, exclude: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Mean absolute difference of consecutive frames, values 0..1: float64 [F - 1], entry t - 1
    is the step from frame t - 1 to frame t. Pixels in the `exclude` box (x0, y0, x1, y1) are left
    out."""
    frames = measure.as_uint8_frames(frames, "frame_differences").astype(np.float32)
    difference = np.abs(np.diff(frames, axis=0)).mean(axis=-1)  # (F - 1, H, W)
    keep = np.ones(frames.shape[1:3], dtype=bool)
    if exclude is not None:
        x0, y0, x1, y1 = exclude
        keep[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    return difference[:, keep].mean(axis=1).astype(np.float64) / 255.0


def seam_stability(frames, frames_per_clip: int, neighbours: int = 1,
                   exclude: tuple[int, int, int, int] | None = None) -> SeamStability:
    """Compare the change at clip seams (frame t = k * frames_per_clip, k >= 1, against frame t - 1)
    with the change of the `neighbours` steps on each side of each seam. Comparing with the
    neighbourhood rather than the whole video keeps the ratio near 1 for a seamless video even
    when the amount of motion varies along it. `exclude`: a box (pixels) left out, the mouth:
    it moves in bursts with the syllables, which makes the ratio of a seamless video scatter
    (ground truth: std 0.24 with the mouth, 0.06 without, over 30 talkers of 3 s); a seam shows
    in the whole picture anyway, and the lip-sync metric covers the mouth."""
    if frames_per_clip < 1:
        raise ValueError(f"seam_stability: frames_per_clip must be >= 1, got {frames_per_clip}")
    steps = frame_differences(frames, exclude)  # steps[t - 1]: frame t - 1 -> t
    num_frames = len(steps) + 1
    seams = list(range(frames_per_clip, num_frames, frames_per_clip))
    if not seams:
        raise ValueError(f"seam_stability: {num_frames} frames hold no seam between clips of {frames_per_clip} "
                         "frames; give a video longer than one clip")
    seam_set = set(seams)
    around = sorted({t for s in seams for t in range(s - neighbours, s + neighbours + 1)
                     if 1 <= t < num_frames and t not in seam_set})
    inside = [t for t in range(1, num_frames) if t not in seam_set]
    seam_difference = float(np.mean([steps[t - 1] for t in seams]))
    around_difference = float(np.mean([steps[t - 1] for t in around])) if around else float("nan")
    inside_difference = float(np.mean([steps[t - 1] for t in inside])) if inside else float("nan")
    if not around or around_difference < 1e-9:
        ratio = 1.0 if seam_difference < 1e-9 else float("inf")
    else:
        ratio = seam_difference / around_difference
    return SeamStability(seam_difference=seam_difference, around_difference=around_difference,
                         inside_difference=inside_difference, ratio=float(ratio), seams=len(seams))
