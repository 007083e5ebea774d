"""A head-motion speed per video frame, from the voice's loudness (beyond EMO: the paper sets one
speed per clip by hand).

A song nods more in its loud passages and less in its quiet ones; speech rests between phrases.
`speed_from_audio` turns the audio into one speed per frame, which `EMOPipeline.iter_clips`
takes as `speed=` (see `emo.pipeline.speed_track`):

1. **Loudness per frame**: the RMS over LOUDNESS_WINDOW_SECONDS centred on each frame's centre
   ((f + 0.5) / fps, as the synthetic talkers' mouths are timed), the power averaged over the
   channels (so out-of-phase stereo does not cancel), in dB.
2. **Relative to the track**: 0 at `dynamic_range_db` below the track's loud level (its 95th
   percentile, so a few peaks do not set it) and 1 at it, clipped; frames below
   SILENCE_DB (dBFS) are 0. A track's recording level therefore does not matter, only its
   loud and quiet passages, and silence (or a silent track) gives `min_speed`.
3. **Smoothed** with a Gaussian of `smoothing` seconds (standard deviation), which turns the
   syllable-rate flicker into a measure of how loud the passage is, then **stretched** so that
   the loud passages reach 1 again (divided by the smoothed level's LOUD_PERCENTILE-th
   percentile, by at most MAX_STRETCH; speech's pauses between syllables would otherwise keep
   even its loudest passages well below max_speed).
4. **Mapped** linearly onto `min_speed .. max_speed`.

No jitter: a Gaussian of standard deviation sigma frames changes a signal bounded in 0..1 by at
most 1 / (sigma sqrt(2 pi)) ~ 0.4 / sigma per frame, so the speed changes by at most
0.4 x MAX_STRETCH x (max - min) / (smoothing x fps) per frame.

Every step is monotone: more energy in a frame never lowers any frame's speed, as long as the
track's loud levels (the two percentiles) stay the same.

Tempo is not used: a global tempo estimate (librosa's) is one number per track, often off by a
factor of two, meaningless for speech, and nothing calibrates a mapping from beats per minute
to EMO's speed units.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from .audio import as_channels_first

logger = logging.getLogger(__name__)

LOUDNESS_WINDOW_SECONDS = 0.1  # a syllable's length: the loudness each frame hears
LOUD_PERCENTILE = 95.0  # the track's loud level, in frames
DYNAMIC_RANGE_DB = 20.0  # loud level -> min speed over this many dB (a passage 10 dB down: halfway)
SILENCE_DB = -50.0  # dBFS: a frame below it is silent whatever the track's level
DEFAULT_SMOOTHING = 0.5  # seconds (Gaussian standard deviation)
MAX_STRETCH = 2.0  # the smoothed level is stretched by at most this to bring loud passages to 1
DEFAULT_MIN_SPEED = 0.3
DEFAULT_MAX_SPEED = 1.2


def frame_loudness_db(waveform: torch.Tensor, sample_rate: int, fps: float, num_frames: int,
                      window_seconds: float = LOUDNESS_WINDOW_SECONDS) -> np.ndarray:
    """The RMS level of each video frame in dBFS, float64 (num_frames,): over `window_seconds`
    centred on (f + 0.5) / fps, the power averaged over channels; zero-padded outside the audio
    (a frame past the end is silent). waveform: (T,), (C, T) or ComfyUI's (B, C, T)."""
    power = _power(waveform, "speed_from_audio")  # (T,)
    half = max(1, int(round(window_seconds * sample_rate / 2)))
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    centres = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(np.int64)
    lo = np.clip(centres - half, 0, len(power))
    hi = np.clip(centres + half, 0, len(power))
    mean_power = np.maximum((cumulative[hi] - cumulative[lo]) / (2 * half), 0.0)  # cumsum rounding
    return 10.0 * np.log10(mean_power + 1e-12)


def loudness_level(level_db: np.ndarray, dynamic_range_db: float = DYNAMIC_RANGE_DB) -> np.ndarray:
    """Frame levels in dBFS -> 0..1: 1 at the track's loud level (its LOUD_PERCENTILE-th
    percentile), 0 at `dynamic_range_db` below it and for frames below SILENCE_DB."""
    level_db = np.asarray(level_db, dtype=np.float64)
    if level_db.size == 0:
        return level_db
    loud = float(np.percentile(level_db, LOUD_PERCENTILE))
    if loud <= SILENCE_DB:
        return np.zeros_like(level_db)
    level = np.clip((level_db - (loud - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    level[level_db < SILENCE_DB] = 0.0
    return level


def gaussian_smooth(values: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Smooth a 1-D signal with a normalised Gaussian (edges: the nearest value repeated)."""
    values = np.asarray(values, dtype=np.float64)
    if sigma_frames <= 0 or values.size < 2:
        return values.copy()
    radius = int(math.ceil(4 * sigma_frames))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, taps / taps.sum(), mode="valid")


def speed_from_audio(waveform: torch.Tensor, sample_rate: int, fps: float, num_frames: int,
                     min_speed: float = DEFAULT_MIN_SPEED, max_speed: float = DEFAULT_MAX_SPEED,
                     smoothing: float = DEFAULT_SMOOTHING, *,
                     dynamic_range_db: float = DYNAMIC_RANGE_DB) -> torch.Tensor:
    """One head-motion speed per video frame from the audio's loudness: float32 (num_frames,),
    within min_speed .. max_speed (see the module's docstring).

    waveform: (T,), (C, T) or ComfyUI's (B, C, T), any sample rate (Hz); fps: video frames per
    second; smoothing: seconds (Gaussian standard deviation; 0 = none); dynamic_range_db: how
    far below the track's loud level the speed reaches min_speed.
    """
    operation = "speed_from_audio"
    for name, value in (("min_speed", min_speed), ("max_speed", max_speed), ("smoothing", smoothing),
                        ("fps", fps), ("dynamic_range_db", dynamic_range_db)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{operation}: {name} must be a number >= 0, got {value!r}")
    if min_speed > max_speed:
        raise ValueError(f"{operation}: min_speed {min_speed} is above max_speed {max_speed}; give min <= max")
    if fps <= 0 or dynamic_range_db <= 0:
        raise ValueError(f"{operation}: fps and dynamic_range_db must be > 0, got {fps} and {dynamic_range_db}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"{operation}: sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 0:
        raise ValueError(f"{operation}: num_frames must be a whole number >= 0, got {num_frames!r}")
    level_db = frame_loudness_db(waveform, int(sample_rate), float(fps), int(num_frames))
    level = gaussian_smooth(loudness_level(level_db, dynamic_range_db), smoothing * fps)
    if level.size and level.max() > 0:
        loud = float(np.percentile(level, LOUD_PERCENTILE))
        level = level * min(MAX_STRETCH, 1.0 / max(loud, 1e-12))
    speeds = min_speed + (max_speed - min_speed) * np.clip(level, 0.0, 1.0)
    if num_frames:
        logger.info("%s: %d frames, speed %.2f-%.2f (mean %.2f) from the audio's loudness", operation, num_frames,
                    speeds.min(), speeds.max(), speeds.mean())
    return torch.from_numpy(speeds.astype(np.float32))


def _power(waveform, operation: str) -> np.ndarray:
    """Samples squared, averaged over channels: float64 (T,)."""
    channels = as_channels_first(waveform, operation).detach().cpu().to(torch.float64)
    samples = torch.nan_to_num(channels).numpy()
    return (samples ** 2).mean(axis=0)
