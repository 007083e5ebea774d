"""Windowed sampling's schedule: which frames each overlapping window holds at each step.

A family that denoises the whole video at once (instead of clip after clip through motion frames)
returns a `ContextWindows` from `ModelFamily.clip_schedule`; the pipeline then denoises every
frame's latents together, each step window by window, and averages the predictions per frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextWindows:
    """Windowed sampling: the whole video's latents are denoised together, each step in
    overlapping windows of `frames_per_clip` frames (sharing `motion_frames` frames with the next),
    whose predictions are averaged per frame (AnimateDiff-style context windows; EchoMimic's
    sampler). Fields are the family's choices."""

    closed_loop: bool = True  # the last window wraps around to the first frames
    shift_per_step: int = 0  # every frame index moves by this times the step index (mod F)
    # Without guidance, average the window sum per frame (False: keep the sum, a peer's quirk).
    mean_without_guidance: bool = True
    velocity_round_trip: bool = False  # pass each prediction through x0 and back (a peer's acc path)
    noise_clamp: float | None = None  # clamp the initial noise to +-this


def context_windows(num_frames: int, size: int, overlap: int, spec: ContextWindows, step: int = 0) -> list[list[int]]:
    """The frame indices of each window at denoising step `step`."""
    if num_frames <= size:
        windows = [list(range(num_frames))]
    else:
        stride = size - overlap
        starts = range(0, num_frames, stride) if spec.closed_loop else range(0, num_frames - overlap, stride)
        windows = [[(start + k) % num_frames if spec.closed_loop else min(start + k, num_frames - 1)
                    for k in range(size)] for start in starts]
    shift = spec.shift_per_step * step
    return [[(i + shift) % num_frames for i in window] for window in windows] if shift else windows
