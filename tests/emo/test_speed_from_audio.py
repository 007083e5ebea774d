"""A head-motion speed per frame from the voice's loudness: bounded, monotone in the energy,
smooth, deterministic, independent of the recording level, the minimum in silence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emo.audio import load_audio
from emo.checkpoints import DEMO_CHECKPOINT
from emo.pipeline import speed_track
from emo.speed_from_audio import MAX_STRETCH, frame_loudness_db, gaussian_smooth, speed_from_audio
from emo.synthetic import synthesize_voice

RATE = 16000
FPS = 25.0


def song(seconds: float = 8.0, quiet_gain: float = 0.1, seed: int = 0) -> torch.Tensor:
    """A song-like signal (1, T): a sung tone with a 4 Hz syllable envelope, loud for 2 s, then
    quiet (x quiet_gain) for 2 s, and so on."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 440 * t + 1.0)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    passage = np.where((t // 2) % 2 == 0, 1.0, quiet_gain)
    signal = 0.3 * passage * envelope * tone + 1e-3 * rng.standard_normal(t.size)
    return torch.from_numpy(signal.astype(np.float32))[None]


def frames_of(seconds: float) -> int:
    return math.ceil(seconds * FPS)


def passage_means(speeds: torch.Tensor) -> tuple[float, float]:
    """Mean speed in the loud and in the quiet passages (2 s each, 0.5 s margins left out)."""
    seconds = (np.arange(len(speeds)) + 0.5) / FPS
    inside = (seconds % 2 > 0.5) & (seconds % 2 < 1.5)
    loud = inside & ((seconds // 2) % 2 == 0)
    quiet = inside & ((seconds // 2) % 2 == 1)
    return float(speeds[loud].mean()), float(speeds[quiet].mean())


def test_loud_passages_get_the_maximum_quiet_ones_less_and_every_speed_is_bounded():
    speeds = speed_from_audio(song(), RATE, FPS, frames_of(8), 0.3, 1.2, 0.3)
    assert speeds.shape == (200,) and speeds.dtype == torch.float32
    assert speeds.min() >= 0.3 and speeds.max() <= 1.2
    loud, quiet = passage_means(speeds)
    # The loud passages dip with the syllables (RMS 14 dB below the peaks); the quiet ones are
    # 20 dB quieter: the whole 20 dB range down, but their syllable peaks are smoothed in.
    assert loud > 1.0 and quiet < 0.6 and loud - quiet > 0.5
    assert speed_track(speeds, 200).equal(speeds)  # the pipeline takes it as it is


def test_more_energy_never_lowers_a_speed():
    base = song(quiet_gain=0.1)
    louder = song(quiet_gain=0.3)  # the quiet passages louder, the loud level the same
    slow = speed_from_audio(base, RATE, FPS, 200, 0.3, 1.2, 0.3)
    fast = speed_from_audio(louder, RATE, FPS, 200, 0.3, 1.2, 0.3)
    assert (fast >= slow - 1e-5).all()
    assert passage_means(fast)[1] > passage_means(slow)[1] + 0.2


def test_silence_gives_the_minimum_and_the_recording_level_does_not_matter():
    assert torch.equal(speed_from_audio(torch.zeros(1, RATE * 2), RATE, FPS, 50, 0.25, 1.0), torch.full((50,), 0.25))
    hiss = 1e-4 * torch.randn(1, RATE * 2, generator=torch.Generator().manual_seed(0))  # -80 dBFS
    assert torch.equal(speed_from_audio(hiss, RATE, FPS, 50, 0.25, 1.0), torch.full((50,), 0.25))
    voice = song()
    # Any level well above SILENCE_DB (the quiet passages here are at about -35 dBFS).
    assert torch.allclose(speed_from_audio(voice, RATE, FPS, 200), speed_from_audio(0.5 * voice, RATE, FPS, 200),
                          atol=1e-5)
    # Frames past the end of the audio are silent.
    assert speed_from_audio(voice[:, :RATE * 2], RATE, FPS, 100, 0.3, 1.2, 0.0)[-10:].eq(0.3).all()


def test_the_curve_is_smooth_and_smoothing_is_what_bounds_each_step():
    voice = torch.from_numpy(synthesize_voice(1_000_100, 8.0, 180.0))[None]
    for smoothing in (0.25, 0.5, 1.0):
        speeds = speed_from_audio(voice, RATE, FPS, 200, 0.2, 1.4, smoothing)
        bound = 0.4 * MAX_STRETCH * (1.4 - 0.2) / (smoothing * FPS)
        assert speeds.diff().abs().max() <= bound + 1e-6
    raw = speed_from_audio(voice, RATE, FPS, 200, 0.2, 1.4, 0.0)
    assert raw.diff().abs().max() > 0.3  # without smoothing it flickers with the syllables


def test_deterministic_and_any_channel_layout():
    voice = song(seconds=3)
    once = speed_from_audio(voice, RATE, FPS, 75)
    assert torch.equal(once, speed_from_audio(voice, RATE, FPS, 75))
    stereo = voice.repeat(2, 1)
    assert torch.allclose(speed_from_audio(stereo, RATE, FPS, 75), once, atol=1e-6)
    assert torch.allclose(speed_from_audio(stereo[None], RATE, FPS, 75), once, atol=1e-6)  # ComfyUI AUDIO
    assert torch.allclose(speed_from_audio(voice[0], RATE, FPS, 75), once, atol=1e-6)
    # Out-of-phase stereo is not silent: the power is averaged, not the samples.
    assert torch.allclose(speed_from_audio(torch.cat([voice, -voice]), RATE, FPS, 75), once, atol=1e-6)


@pytest.mark.skipif(not (DEMO_CHECKPOINT.parent / "sample_voice.wav").is_file(), reason="no bundled sample voice")
def test_the_curve_follows_the_voices_energy():
    waveform, rate = load_audio(DEMO_CHECKPOINT.parent / "sample_voice.wav")
    frames = math.ceil(waveform.shape[-1] / rate * FPS)
    speeds = speed_from_audio(waveform, rate, FPS, frames, 0.3, 1.2, 0.5).numpy()
    rms = 10 ** (frame_loudness_db(waveform, rate, FPS, frames) / 20)
    smoothed_rms = gaussian_smooth(rms, 0.5 * FPS)
    assert np.corrcoef(speeds, smoothed_rms)[0, 1] > 0.8
    assert np.corrcoef(speeds, rms)[0, 1] > 0.4


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_speed=1.0, max_speed=0.5), "min_speed 1.0 is above max_speed 0.5"),
    (dict(smoothing=-1.0), "smoothing must be a number >= 0"),
    (dict(fps=0.0), "fps and dynamic_range_db must be > 0"),
    (dict(sample_rate=0), "sample_rate must be a positive whole number"),
    (dict(num_frames=-3), "num_frames must be a whole number >= 0"),
])
def test_bad_arguments_say_what_to_give(kwargs, message):
    arguments = {**dict(waveform=song(seconds=1), sample_rate=RATE, fps=FPS, num_frames=25), **kwargs}
    with pytest.raises(ValueError, match="speed_from_audio: " + message):
        speed_from_audio(**arguments)
