"""Hallo2's long-audio front end: the driving audio in pieces, each encoded on its own.

Hallo2 (fudan-generative-vision/hallo2, `scripts/inference_long.py` with `use_cut: true`, commit
58a9aa6) cuts the audio file into 60 s pieces (pydub, whole milliseconds) and runs Hallo's
`AudioProcessor.preprocess` on each piece as a file of its own: its own resampling to 16 kHz, its
own feature-extractor normalisation, CNN, interpolation to the frame count and transformer (no
attention across pieces, which keeps wav2vec2's memory bounded on long songs). The per-frame
features are concatenated::

    frames of piece k = ceil(samples_k / 16000 * fps)          (Hallo's float formula)
    audio_length      = sum of the pieces' frames
    only the last piece is padded, and only when its OWN frame count is not a whole number of
    clips; it then gets (clip - total % clip) frames of silence, so the total becomes whole
    clips. A last piece of whole clips is never padded, and the total's remainder (< clip
    frames) never reaches a clip.

Pieces shorter than the whole clip change the features near every cut, so this is not Hallo's
one-call result on long audio; on audio of one piece (<= 60 s) it is exactly Hallo's.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ... import audio as emo_audio
from .audio import (
    _DEFAULT_ATTENTION_BYTES,
    _DEFAULT_CNN_CHUNK_SECONDS,
    HALLO_CLIP_LENGTH,
    HALLO_FPS,
    HALLO_SAMPLE_RATE,
    HalloAudio,
    _cnn_features,
    _encoder_layer_outputs,
    hallo_audio_features,
    hallo_frame_count,
)

logger = logging.getLogger(__name__)

HALLO2_SEGMENT_SECONDS = 60.0
"""`cut_audio(..., length=60)` in inference_long.py."""


def segment_bounds(num_samples: int, sample_rate: int, segment_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of Hallo2's pieces, as pydub cuts them: the clip is
    round(1000 * n / rate) ms long, pieces are whole `segment_seconds`, the last ends at that
    rounded length (so it may lose or gain (as silence) less than a millisecond)."""
    if not segment_seconds > 0:
        raise ValueError(f"segment_bounds: segment_seconds must be > 0, got {segment_seconds!r}")
    total_ms = round(1000 * num_samples / sample_rate)
    piece_ms = int(round(segment_seconds * 1000))
    count = total_ms // piece_ms + (1 if total_ms % piece_ms else 0)
    to_sample = lambda ms: int(ms * sample_rate / 1000)  # noqa: E731  (pydub's frame_count(ms=...))
    return [(to_sample(k * piece_ms), to_sample(min((k + 1) * piece_ms, total_ms))) for k in range(count)]


def hallo2_audio_features(
    wav2vec2_model,
    waveform: torch.Tensor,
    sample_rate: int,
    fps: int = HALLO_FPS,
    *,
    clip_length: int = HALLO_CLIP_LENGTH,
    segment_seconds: float = HALLO2_SEGMENT_SECONDS,
    normalize: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
) -> HalloAudio:
    """Hallo2's `use_cut` audio loop (vocal separation off) on a waveform.

    Args:
        wav2vec2_model: a ``transformers.Wav2Vec2Model`` in eval mode (wav2vec2-base-960h).
        waveform: ``[T]``, ``[C, T]`` or ``[B, C, T]`` at ``sample_rate``, full scale +-1.
        sample_rate: Hz of ``waveform`` (the file's own rate: Hallo2 cuts before resampling).
        fps: video frames per second (25).
        clip_length: frames per clip (16); see the module docstring for Hallo2's padding rule.
        segment_seconds: length of a piece (60).
        normalize: the feature extractor's ``do_normalize``.
        progress: optional ``progress(done_pieces, total_pieces)``.

    Returns:
        :class:`HalloAudio`: ``[F, L, D]`` features of all pieces, ``num_frames`` = Hallo2's
        ``audio_length`` (the sum of the pieces' unpadded frame counts).
    """
    mono = emo_audio.to_mono(waveform).detach().to("cpu", torch.float32)
    if mono.shape[0] == 0:
        raise ValueError("hallo2_audio_features: the audio is empty (0 samples); give a clip with some sound")
    bounds = segment_bounds(int(mono.shape[0]), int(sample_rate), segment_seconds)
    pieces, done = [], 0
    for k, (start, end) in enumerate(bounds):
        piece = mono[start:end]
        if piece.shape[0] < end - start:  # pydub pads a rounded-up last millisecond with silence
            piece = F.pad(piece, (0, end - start - piece.shape[0]))
        last = k == len(bounds) - 1
        if not last or clip_length <= 0:
            result = hallo_audio_features(wav2vec2_model, piece, sample_rate, fps, clip_length=0, normalize=normalize)
        else:
            result = _last_piece(wav2vec2_model, piece, sample_rate, fps, clip_length, done, normalize)
        pieces.append(result.features)
        done += result.num_frames
        if progress is not None:
            progress(k + 1, len(bounds))
    features = torch.cat(pieces)
    logger.debug("hallo2_audio_features: %d pieces of %.0f s -> %d frames (%d of audio)", len(bounds),
                  segment_seconds, features.shape[0], done)
    return HalloAudio(features=features, num_frames=done, fps=fps)


def _last_piece(model, piece: torch.Tensor, sample_rate: int, fps: int, clip_length: int, before: int,
                normalize: bool) -> HalloAudio:
    """The last piece, padded by Hallo2's rule: condition on its own frame count, amount on the
    total so far."""
    samples = emo_audio.resample(piece, sample_rate, HALLO_SAMPLE_RATE)
    if normalize:
        samples = emo_audio.normalize_waveform(samples)
    frames = hallo_frame_count(int(samples.shape[0]), fps)
    missing = 0 if frames % clip_length == 0 else clip_length - (frames + before) % clip_length
    # Hallo's preprocess pads the normalised samples by whole frames and adds `missing` to its
    # frame count (an integer sum, not the float formula on the padded length).
    padded = F.pad(samples, (0, missing * (HALLO_SAMPLE_RATE // fps)))
    return HalloAudio(_features_at(model, padded, frames + missing), frames, fps)


def _features_at(model, samples: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Hallo's wav2vec2 pass on normalised 16 kHz samples, interpolated to `num_frames`:
    [num_frames, L, D] float32 on the CPU (as `hallo_audio_features`, with the count given)."""
    parameter = next(model.parameters())
    with torch.inference_mode():
        cnn = _cnn_features(model, samples, _DEFAULT_CNN_CHUNK_SECONDS, parameter.device, parameter.dtype)
        resampled = F.interpolate(cnn, size=num_frames, mode="linear", align_corners=True)
        hidden, _ = model.feature_projection(resampled.transpose(1, 2))
        layers = _encoder_layer_outputs(model, hidden, _DEFAULT_ATTENTION_BYTES, None)
        features = torch.stack([h[0] for h in layers], dim=1)
    return features.to("cpu", torch.float32).clone()


HALLO2_MOTION_MASK_RATE = 0.25
"""`mask_rate` in configs/inference/long.yaml (`use_mask: true`)."""


def mask_motion_pixels(pixels: torch.Tensor, face_mask: torch.Tensor, rate: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Hallo2's motion-frame masking before the VAE (inference_long.py, `use_mask`).

    pixels: (k, 3, H, W) motion-frame pixels in 0..1 (the first clip's copies of the reference,
    later the last generated frames); face_mask: (H, W), the face region the face locator sees
    (> 0 inside). One uniform draw per pixel position, shared by the k frames and the channels:
    a position outside the face whose draw is <= `rate` becomes 0 in Hallo's -1..1 pixel range,
    i.e. 0.5 (mid grey) here. The draws come from `generator` (Hallo2 uses the global RNG it seeded
    for the latents, so its exact pattern is not reproduced; its statistics are)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"mask_motion_pixels: pixels must be (k, 3, H, W), got {tuple(pixels.shape)}")
    h, w = pixels.shape[-2:]
    if tuple(face_mask.shape) != (h, w):
        raise ValueError(f"mask_motion_pixels: the face mask is {tuple(face_mask.shape)}, the frames {(h, w)}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"mask_motion_pixels: rate must be in [0, 1), got {rate!r}")
    draws = torch.rand(h, w, generator=generator, device=generator.device if generator is not None else "cpu")
    keep = (draws > rate).to(pixels.device) | (face_mask.to(pixels.device) > 0)
    return torch.where(keep, pixels, torch.full_like(pixels, 0.5))


def lineage_audio_features(options, wav2vec2_model, waveform: torch.Tensor, sample_rate: int, fps: int = HALLO_FPS,
                           *, clip_length: int = HALLO_CLIP_LENGTH, normalize: bool = True,
                           progress: Optional[Callable[[int, int], None]] = None) -> HalloAudio:
    """The audio features a Hallo-lineage model runs on, by its `HalloOptions`: Hallo2's pieces
    when `audio_segment_seconds` > 0, else Hallo's one call (Hallo, JoyHallo). `normalize`: the
    speech encoder's feature-extractor `do_normalize` (preprocessor_config.json)."""
    if options.audio_segment_seconds > 0:
        return hallo2_audio_features(wav2vec2_model, waveform, sample_rate, fps, clip_length=clip_length,
                                     segment_seconds=options.audio_segment_seconds, normalize=normalize,
                                     progress=progress)
    return hallo_audio_features(wav2vec2_model, waveform, sample_rate, fps, clip_length=clip_length,
                                normalize=normalize, progress=progress)
