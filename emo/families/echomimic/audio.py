"""EchoMimic's audio conditioning: whisper-tiny features of the voice, gathered per video frame.

The data path (EchoMimic `Audio2Feature.audio2feat` + `feature2chunks`, antgroup/echomimic a53e970)::

    waveform [S] at 16 kHz
      --log_mel-->           [80, M]          M = S // 160 frames at 100 Hz
      --whisper_features-->  [n, L+1, D]      n = 50 Hz encoder frames, L blocks, D = 384
      --feature_chunks-->    [n_chunks, 10 (L+1), D]   one token set per video frame

Time conventions: mel frame m is centred on sample 160 m (`center=True`); encoder frame j covers
mel frames 2j and 2j+1, so it sits at j / 50 s. Video frame i takes the 10 encoder frames
c-4 ... c+5 around c = int(i * 50 / fps), clamped to the clip (EchoMimic's
`audio_feat_length=[2, 2]` gives range(c - 4, c + 6)): 80 ms before c and 100 ms after it.

Frame count. EchoMimic makes chunks for i = 0, 1, ... until the first i with int(i*50/fps) > n,
so it has n_chunks >= ceil(duration * fps) + 1 chunks (see `chunk_indices`), and renders
F = min(L, n_chunks) frames: 1 to 3 more than the audio needs (1 or 2 up to 30 fps). It then muxes
the audio in, and those extra frames show the clamped last features. Our library's convention is
`emo.audio.frame_count` = ceil(duration * fps), the frames needed to cover the audio. Chunk i is
the same for video frame i either way, so `encode_echomimic_audio(..., frames="audio")` (the
default, for a video of the audio's length) returns exactly EchoMimic's first ceil(duration * fps)
chunks; `frames="echomimic"` gives EchoMimic's own F for parity runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ...audio import frame_count
from .whisper import WhisperEncoder

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # whisper's input rate
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms: 100 mel frames per second
N_MELS = 80
SEGMENT_FRAMES = 3000  # 30 s of mel frames: one whisper encoder input
FEATURE_RATE = 50  # encoder frames per second (the stride-2 conv2 halves the mel rate)
FRAMES_BEFORE, FRAMES_AFTER = 4, 5  # encoder frames gathered around a video frame's centre
MIN_SAMPLES = 2 * HOP  # the shortest audio that gives one encoder frame (20 ms)

_STFT_BLOCK = 3000  # mel frames computed per STFT call: bounds the complex spectrogram's memory

ProgressCallback = Callable[[int, int], None]


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox): linear, 200/3 Hz per mel, up to 1 kHz (15 mel), then
    logarithmic with 27 mel per factor 6.4."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, logarithmic, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), (200.0 / 3) * mel)


@lru_cache(maxsize=None)
def mel_filterbank() -> torch.Tensor:
    """Whisper's 80-band mel filterbank `[80, 201]` (float32).

    openai ships it precomputed (`mel_filters.npz`, made with librosa's default mel filters: Slaney
    mel scale, htk=False, norm='slaney'); it is computed here instead, with the same arithmetic, so
    that no audio library is needed at run time: triangles between 82 mel-spaced edges from 0 to
    8 kHz over the 201 STFT bin frequencies, each scaled by 2 / (its width in Hz) for equal area.
    """
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)  # bin centre frequencies, Hz
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(0.0), _hz_to_slaney_mel(SAMPLE_RATE / 2), N_MELS + 2))
    widths = np.diff(edges)
    distance = edges[:, None] - bins[None, :]  # (82, 201)
    weights = np.zeros((N_MELS, bins.shape[0]), dtype=np.float32)
    for i in range(N_MELS):
        rising = -distance[i] / widths[i]
        falling = distance[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    # the rows are rounded to float32 before the area scaling, as in the shipped table
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights)


def _mono_16k(waveform: Union[torch.Tensor, np.ndarray], operation: str) -> torch.Tensor:
    waveform = torch.as_tensor(waveform)
    if waveform.ndim == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.ndim != 1:
        raise ValueError(f"{operation}: expected a mono waveform [samples] at 16 kHz, got shape "
                         f"{tuple(waveform.shape)}; mix to mono and resample first (emo.audio.to_mono, "
                         "emo.audio.resample).")
    if not waveform.is_floating_point():
        raise ValueError(f"{operation}: expected float samples in -1..1, got {waveform.dtype}; "
                         "divide integer PCM by its full scale (32768 for int16).")
    if waveform.shape[0] < MIN_SAMPLES:
        raise ValueError(f"{operation}: the audio is {waveform.shape[0]} samples long; EchoMimic's whisper "
                         f"features need at least {MIN_SAMPLES} samples ({1000 * MIN_SAMPLES // SAMPLE_RATE} ms) "
                         "at 16 kHz.")
    return waveform.float().cpu()


def log_mel(waveform_16k: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """Whisper's log-mel spectrogram of a whole clip.

    |STFT|^2 (n_fft 400, hop 160, Hann, `center=True` with reflect padding, the last frame dropped),
    80 mel bands, log10(max(., 1e-10)), floored at (max over the whole clip - 8), then (x + 4) / 4.

    Args:
        waveform_16k: mono float samples `[S]` (or `[1, S]`) at 16 kHz, S >= 320.

    Returns:
        float32 `[80, S // 160]` on the CPU.
    """
    x = _mono_16k(waveform_16k, "log_mel")
    frames = x.shape[0] // HOP  # center=True gives 1 + S // hop frames; whisper drops the last
    padded = F.pad(x[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT)
    filters = mel_filterbank()
    out = torch.empty(N_MELS, frames)
    # Block by block, so a long clip never holds its whole complex spectrogram; frame m starts at
    # padded sample m * hop, exactly as in one centred STFT.
    for start in range(0, frames, _STFT_BLOCK):
        stop = min(frames, start + _STFT_BLOCK)
        piece = padded[start * HOP:(stop - 1) * HOP + N_FFT]
        spec = torch.stft(piece, N_FFT, HOP, window=window, center=False, return_complex=True)
        out[:, start:stop] = (filters @ spec.abs() ** 2).clamp(min=1e-10).log10()
    out = torch.maximum(out, out.max() - 8.0)  # the floor is over the whole clip, not per segment
    return (out + 4.0) / 4.0


@torch.no_grad()
def whisper_features(encoder: WhisperEncoder, waveform_16k: Union[torch.Tensor, np.ndarray], *,
                     progress: Optional[ProgressCallback] = None) -> torch.Tensor:
    """EchoMimic's `audio2feat`: whisper encoder features of a whole clip at 50 Hz.

    The log-mel of the whole clip is cut into 30 s segments (3000 mel frames); each is zero-padded
    to 3000 frames, encoded on its own, and keeps the first int(len / 2) encoder frames of its own
    mel length. One segment is on the device at a time.

    Args:
        encoder: the whisper encoder; its device and dtype are used.
        waveform_16k: mono float samples `[S]` at 16 kHz.
        progress: optional `progress(done, total)` per segment.

    Returns:
        float32 `[n, L+1, D]` on the CPU, n = (S // 160) // 2 for audio up to 30 s, and the sum over
        segments beyond.
    """
    mel = log_mel(waveform_16k)
    parameter = next(encoder.parameters())
    total = -(-mel.shape[1] // SEGMENT_FRAMES)
    pieces = []
    for index, start in enumerate(range(0, mel.shape[1], SEGMENT_FRAMES)):
        segment = mel[:, start:start + SEGMENT_FRAMES]
        keep = segment.shape[1] // 2
        segment = F.pad(segment, (0, SEGMENT_FRAMES - segment.shape[1]))
        out = encoder(segment[None].to(device=parameter.device, dtype=parameter.dtype))[0]  # (1500, L+1, D)
        pieces.append(out[:keep].float().cpu())
        if progress is not None:
            progress(index + 1, total)
    return torch.cat(pieces)


def chunk_indices(num_features: int, fps: float) -> torch.Tensor:
    """The encoder frames each of EchoMimic's chunks gathers: `[n_chunks, 10]` int64.

    Chunk i takes frames c-4 ... c+5 with c = int(i * 50 / fps), clamped to 0 ... n-1. Chunks are
    made for i = 0, 1, ... and the loop stops after the first i with int(i * (50 / fps)) > n, so
    n_chunks exceeds the audio's video length. Both float expressions are EchoMimic's own (they can
    differ in the last bit, which matters when the product is a whole number).
    """
    if num_features < 1:
        raise ValueError(f"chunk_indices: need at least one whisper frame, got {num_features}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise ValueError(f"chunk_indices: fps must be a positive number, got {fps!r}")
    multiplier = 50.0 / fps
    offsets = torch.arange(-FRAMES_BEFORE, FRAMES_AFTER + 1)
    centres = []
    i = 0
    while True:
        centres.append(int(i * 50 / fps))
        start = int(i * multiplier)
        i += 1
        if start > num_features:
            break
    return (torch.tensor(centres)[:, None] + offsets).clamp(0, num_features - 1)


def feature_chunks(features: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EchoMimic's `feature2chunks`: per-video-frame token sets.

    Args:
        features: `[n, L+1, D]` whisper features (50 Hz).
        fps: video frame rate.

    Returns:
        `(chunks, indices)`: chunks `[n_chunks, 10 (L+1), D]` (the 10 gathered frames, frame-major,
        layer-minor, as EchoMimic's reshape(-1, 384)), indices `[n_chunks, 10]` int64.
    """
    indices = chunk_indices(features.shape[0], fps)
    return gather_tokens(features, indices), indices


def gather_tokens(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`[n, L+1, D]` features, `[F, 10]` frame indices -> `[F, 10 (L+1), D]` tokens."""
    return features[indices].flatten(1, 2)


@dataclass
class EchoMimicAudio:
    """EchoMimic's audio conditioning for one clip.

    Attributes:
        features: float32 `[n, L+1, D]` whisper features at 50 Hz (CPU).
        indices: int64 `[F, 10]`: the feature frames each of the F video frames gathers.
        fps: the video frame rate the indices were made for.
        num_samples: length of the 16 kHz audio, in samples.

    The tokens are gathered on request (`tokens()`), so a long clip holds its features once
    instead of ten times.
    """

    features: torch.Tensor
    indices: torch.Tensor
    fps: float
    num_samples: int

    @property
    def num_frames(self) -> int:
        """F, the number of video frames."""
        return int(self.indices.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        """T = 10 (L+1): 50 for whisper-tiny."""
        return int(self.indices.shape[1] * self.features.shape[1])

    def tokens(self, frames: Optional[Union[Sequence[int], torch.Tensor]] = None) -> torch.Tensor:
        """`[len(frames), T, D]` token sets of the given video frames (all F when None)."""
        indices = self.indices if frames is None else self.indices[torch.as_tensor(frames, dtype=torch.long)]
        return gather_tokens(self.features, indices)


FRAME_RULES = ("audio", "echomimic")


def encode_echomimic_audio(encoder: WhisperEncoder, waveform_16k: Union[torch.Tensor, np.ndarray], fps: float, *,
                           max_frames: Optional[int] = None, frames: str = "audio",
                           progress: Optional[ProgressCallback] = None) -> EchoMimicAudio:
    """Whisper features and per-video-frame chunk indices for a clip.

    Args:
        encoder: whisper-tiny encoder (`load_whisper_encoder`).
        waveform_16k: mono float samples `[S]` at 16 kHz.
        fps: video frame rate (EchoMimic's default is 24).
        max_frames: cap on F (EchoMimic's `-L`, 1200 by default); None for no cap.
        frames: "audio" -> F = ceil(duration * fps) (`emo.audio.frame_count`, a video as long as
            the audio); "echomimic" -> F = n_chunks, EchoMimic's own count (1-3 frames longer).
            Chunk i is the same under both rules.
    """
    if frames not in FRAME_RULES:
        raise ValueError(f"encode_echomimic_audio: frames must be one of {FRAME_RULES}, got {frames!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"encode_echomimic_audio: max_frames must be a positive integer or None, got {max_frames!r}")
    waveform = _mono_16k(waveform_16k, "encode_echomimic_audio")
    features = whisper_features(encoder, waveform, progress=progress)
    indices = chunk_indices(features.shape[0], fps)
    count = frame_count(int(waveform.shape[0]), SAMPLE_RATE, fps) if frames == "audio" else indices.shape[0]
    assert count <= indices.shape[0], "EchoMimic always has more chunks than the audio has video frames"
    if max_frames is not None and count > max_frames:
        logger.info("encode_echomimic_audio: %d video frames of audio, capped at %d", count, max_frames)
        count = max_frames
    return EchoMimicAudio(features=features, indices=indices[:count], fps=fps, num_samples=int(waveform.shape[0]))
