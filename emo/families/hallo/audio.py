"""Hallo's audio front end: per-video-frame wav2vec2 features as Hallo computes them.

Hallo (`hallo/datasets/audio_processor.py` + `hallo/models/wav2vec.py`, commit 8fd7c57) differs
from EMO's front end (`emo.audio`, which runs the transformer at wav2vec2's 50 Hz and resamples
its output onto the video frames) in where the resampling sits::

    waveform --mono, 16 kHz (librosa: channel mean, soxr "HQ")-->  [T16]
             --Wav2Vec2FeatureExtractor: (x - mean) / sqrt(var + 1e-7)-->  [T16]
             --append zeros up to a whole number of clips-->  [T16 + pad]
             --wav2vec2 CNN-->  [C, N] at 50 Hz
             --linear interpolation (align_corners=True) to the video frame count F-->  [F, C]
             --feature projection, positional conv, transformer layers (at 25 Hz)-->
             --stack the outputs of every layer-->  [F, L, D]

Frame counts follow Hallo's own formulas (see :func:`hallo_frame_count`), including a float
rounding quirk that can add one frame. The features of the padding frames are part of the
result, and the padding changes every frame's features (the transformer attends over it).

Memory: Hallo runs the whole clip in one call. Here the CNN runs in chunks (wav2vec2-base's
per-channel GroupNorm gets the whole clip's statistics first) and self-attention is computed a
block of queries at a time, so memory grows linearly with the clip; the numbers are those of
the one-call computation up to float rounding (about 1e-6).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ... import audio as emo_audio

logger = logging.getLogger(__name__)

HALLO_SAMPLE_RATE = 16000
"""Hallo's `data.driving_audio.sample_rate`: everything is resampled to it."""

HALLO_FPS = 25
"""Hallo's `data.export_video.fps`."""

HALLO_CLIP_LENGTH = 16
"""Hallo's `data.n_sample_frames`: the audio is padded to a whole number of such clips."""

_DEFAULT_CNN_CHUNK_SECONDS = 20.0
_DEFAULT_ATTENTION_BYTES = 256 * 2**20


@dataclass
class HalloAudio:
    """Hallo's audio conditioning for one clip.

    Attributes:
        features: float32 ``[F, L, D]`` on the CPU: for each of F video frames (F a whole number of
            clips when a clip length was given), the outputs of all L wav2vec2 transformer layers.
            Hallo's `audio_emb`.
        num_frames: video frames the audio itself covers (Hallo's `audio_length`); frames past it
            exist only to fill the last clip, and Hallo cuts the video to this length.
        fps: video frames per second.
    """

    features: torch.Tensor
    num_frames: int
    fps: int

    @property
    def padded_frames(self) -> int:
        """Frames added to fill the last clip (``F - num_frames``)."""
        return int(self.features.shape[0]) - self.num_frames


def hallo_frame_count(num_samples_16k: int, fps: int = HALLO_FPS) -> int:
    """Video frames Hallo makes for ``num_samples_16k`` samples at 16 kHz.

    Hallo computes ``math.ceil(n / 16000 * fps)`` in floating point, so some whole numbers of
    frames gain one (35,200 samples at 25 fps are exactly 55 frames, but this gives 56). That is
    reproduced here on purpose: the frame count sets the interpolation grid of every feature.
    """
    if isinstance(num_samples_16k, bool) or not isinstance(num_samples_16k, int) or num_samples_16k < 0:
        raise ValueError(f"hallo_frame_count: num_samples_16k must be an integer >= 0, got {num_samples_16k!r}")
    return math.ceil(num_samples_16k / HALLO_SAMPLE_RATE * _check_fps(fps, "hallo_frame_count"))


def _check_fps(fps, operation: str) -> int:
    # Hallo's padding uses `16000 // fps`, an integer number of samples per frame; it only ever
    # runs at an integer rate (25).
    if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
        raise ValueError(f"{operation}: fps must be a positive whole number of frames per second "
                         f"(Hallo runs at 25), got {fps!r}")
    return fps


def hallo_audio_features(
    wav2vec2_model,
    waveform: torch.Tensor,
    sample_rate: int,
    fps: int = HALLO_FPS,
    *,
    clip_length: int = HALLO_CLIP_LENGTH,
    normalize: bool = True,
    cnn_chunk_seconds: float = _DEFAULT_CNN_CHUNK_SECONDS,
    attention_bytes: int = _DEFAULT_ATTENTION_BYTES,
    progress: Optional[Callable[[int, int], None]] = None,
) -> HalloAudio:
    """Hallo's `AudioProcessor.preprocess(wav, clip_length)` (vocal separation off) on a waveform.

    Args:
        wav2vec2_model: a ``transformers.Wav2Vec2Model`` (wav2vec2-base-960h for Hallo), in eval
            mode, on any device and dtype; its modules are run one by one and nothing is changed.
        waveform: ``[T]``, ``[C, T]`` or ComfyUI's ``[B, C, T]`` (batch item 0) at ``sample_rate``,
            full scale +-1 (a 16-bit file's samples / 32768, as librosa reads them).
        sample_rate: Hz; other rates are resampled to 16 kHz as librosa does (soxr "HQ").
        fps: video frames per second, a whole number (Hallo: 25).
        clip_length: frames per clip; the audio is padded with silence to a whole number of clips
            (Hallo: 16). 0 or a negative value pads nothing (Hallo's `get_embedding`).
        normalize: the feature extractor's ``do_normalize`` (True for wav2vec2-base-960h).
        cnn_chunk_seconds: audio per CNN call; bounds memory on long clips.
        attention_bytes: memory for one block of attention scores; bounds memory on long clips.
        progress: optional ``progress(done_layers, total_layers)`` after each transformer layer.

    Returns:
        :class:`HalloAudio`: float32 ``[F, L, D]`` features on the CPU and the unpadded frame count.
    """
    sample_rate = _check_rate(sample_rate)
    fps = _check_fps(fps, "hallo_audio_features")
    if isinstance(clip_length, bool) or not isinstance(clip_length, int):
        raise ValueError(f"hallo_audio_features: clip_length must be an integer (Hallo: 16), got {clip_length!r}")
    for name, value in (("cnn_chunk_seconds", cnn_chunk_seconds), ("attention_bytes", attention_bytes)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"hallo_audio_features: {name} must be > 0, got {value!r}")
    mono = emo_audio.to_mono(waveform).detach().to("cpu", torch.float32)
    if mono.shape[0] == 0:
        raise ValueError("hallo_audio_features: the audio is empty (0 samples); give a clip with some sound")
    samples = emo_audio.resample(mono, sample_rate, HALLO_SAMPLE_RATE)
    if normalize:
        samples = emo_audio.normalize_waveform(samples)

    num_frames = hallo_frame_count(int(samples.shape[0]), fps)
    total_frames = num_frames
    if clip_length > 0 and num_frames % clip_length:
        # Hallo appends silence after normalising, in whole frames of 16000 // fps samples.
        missing = clip_length - num_frames % clip_length
        samples = F.pad(samples, (0, missing * (HALLO_SAMPLE_RATE // fps)))
        total_frames += missing

    if wav2vec2_model.training:
        logger.warning("hallo_audio_features: the wav2vec2 model is in training mode, so dropout makes the "
                       "features random; call model.eval() after loading it")
    parameter = next(wav2vec2_model.parameters())
    device, dtype = parameter.device, parameter.dtype
    with torch.inference_mode():
        cnn = _cnn_features(wav2vec2_model, samples, cnn_chunk_seconds, device, dtype)  # [1, C, N]
        # Hallo's linear_interpolation: to the video frame count, before the transformer.
        resampled = F.interpolate(cnn, size=total_frames, mode="linear", align_corners=True)
        hidden, _ = wav2vec2_model.feature_projection(resampled.transpose(1, 2))  # [1, F, D]
        # `_mask_hidden_states` is a no-op in eval mode (no mask indices, no SpecAugment).
        layers = _encoder_layer_outputs(wav2vec2_model, hidden, attention_bytes, progress)
        features = torch.stack([h[0] for h in layers], dim=1)  # [F, L, D]
    features = features.to("cpu", torch.float32).clone()  # an ordinary tensor outside inference mode
    logger.debug("hallo_audio_features: %d samples at 16 kHz -> %d frames (+%d padding) at %d fps, %s",
                 int(mono.shape[0]), num_frames, total_frames - num_frames, fps, tuple(features.shape))
    return HalloAudio(features=features, num_frames=num_frames, fps=fps)


def _check_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"hallo_audio_features: sample_rate must be a positive integer number of Hz, "
                         f"got {sample_rate!r}")
    return sample_rate


def _cnn_features(model, samples: torch.Tensor, chunk_seconds: float, device, dtype) -> torch.Tensor:
    """The wav2vec2 CNN over the whole (normalised, padded) clip: ``[1, C, N]`` on ``device``.

    Short clips are one call. Longer ones run in chunks of whole output frames: chunk inputs
    start on the hop grid and span exactly the receptive fields of their frames, so every frame
    sees the samples it would see in one call. The one whole-clip operation, the per-channel
    GroupNorm after the first conv of wav2vec2-base, is given the whole clip's statistics.
    """
    hop, receptive_field = emo_audio.wav2vec2_geometry(model.config)
    total = int(samples.shape[0])
    if total < receptive_field:
        raise ValueError(f"hallo_audio_features: the audio is too short for wav2vec2: {total} samples at 16 kHz, "
                         f"at least {receptive_field} are needed (Hallo fails here too); give a longer clip "
                         f"or a clip length > 0, which pads it")
    frames = (total - receptive_field) // hop + 1
    chunk_frames = max(1, int(chunk_seconds * HALLO_SAMPLE_RATE / hop))
    extractor = model.feature_extractor
    if frames <= chunk_frames:
        return extractor(samples.to(device=device, dtype=dtype)[None])

    first = extractor.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    whole_clip_norm = isinstance(norm, torch.nn.GroupNorm)
    if whole_clip_norm:
        if norm.num_groups != norm.num_channels:
            raise ValueError(f"hallo_audio_features: the first CNN layer's GroupNorm has {norm.num_groups} groups "
                             f"for {norm.num_channels} channels; only per-channel GroupNorm (wav2vec2-base) can "
                             f"be chunked; raise cnn_chunk_seconds above the clip's length")
        mean, variance = emo_audio._whole_clip_channel_statistics(
            first.conv, samples, block_samples=chunk_frames * hop, device=device, dtype=dtype)
        shape = (1, -1, 1)
        mean = mean.to(device=device, dtype=torch.float32).view(shape)
        scale = torch.rsqrt(variance.to(device=device, dtype=torch.float32).view(shape) + norm.eps)

    pieces = []
    for start in range(0, frames, chunk_frames):
        end = min(frames, start + chunk_frames)
        segment = samples[start * hop:(end - 1) * hop + receptive_field].to(device=device, dtype=dtype)
        x = segment[None, None]
        layers = list(extractor.conv_layers)
        if whole_clip_norm:
            x = first.conv(x).float()
            x = (x - mean) * scale
            if norm.affine:
                x = x * norm.weight.float().view(shape) + norm.bias.float().view(shape)
            x = first.activation(x.to(dtype))
            layers = layers[1:]
        for layer in layers:
            x = layer(x)
        assert x.shape[-1] == end - start, "CNN chunks must line up with the frame grid"
        pieces.append(x)
    return torch.cat(pieces, dim=-1)


def _encoder_layer_outputs(model, hidden: torch.Tensor, attention_bytes: int, progress) -> list[torch.Tensor]:
    """Positional conv, then every transformer layer; returns each layer's output ``[1, F, D]``
    (for pre-LayerNorm encoders the last one after the encoder's final LayerNorm, as transformers
    reports ``hidden_states[-1]``)."""
    encoder = model.encoder
    stable = bool(getattr(model.config, "do_stable_layer_norm", False))
    hidden = hidden + encoder.pos_conv_embed(hidden)
    if not stable:
        hidden = encoder.layer_norm(hidden)
    outputs = []
    count = len(encoder.layers)
    for index, layer in enumerate(encoder.layers):
        if getattr(layer, "adapter_layer", None) is not None:
            raise ValueError("hallo_audio_features: wav2vec2 models with attention adapters are not supported; "
                             "use a plain Wav2Vec2Model such as wav2vec2-base-960h")
        if stable:
            attended = _attention(layer.attention, layer.layer_norm(hidden), attention_bytes)
            hidden = hidden + attended
            hidden = hidden + layer.feed_forward(layer.final_layer_norm(hidden))
        else:
            hidden = layer.layer_norm(hidden + _attention(layer.attention, hidden, attention_bytes))
            hidden = layer.final_layer_norm(hidden + layer.feed_forward(hidden))
        outputs.append(hidden)
        if progress is not None:
            progress(index + 1, count)
    if stable:
        outputs[-1] = encoder.layer_norm(outputs[-1])
    return outputs


def _attention(attention, hidden: torch.Tensor, budget_bytes: int) -> torch.Tensor:
    """wav2vec2 self-attention over the whole sequence, a block of queries at a time.

    Each query row's softmax sees every key, so blocking changes nothing but memory.
    ``hidden``: ``[1, F, D]`` -> ``[1, F, D]``.
    """
    batch, length, width = hidden.shape
    heads = attention.num_heads
    head_dim = width // heads

    def split(x):  # [1, F, D] -> [1, heads, F, head_dim]
        return x.view(batch, length, heads, head_dim).transpose(1, 2)

    query, key, value = split(attention.q_proj(hidden)), split(attention.k_proj(hidden)), split(attention.v_proj(hidden))
    block = max(1, int(budget_bytes // (4 * heads * length)))
    pieces = [F.scaled_dot_product_attention(query[:, :, s:s + block], key, value, scale=attention.scaling)
              for s in range(0, length, block)]
    out = torch.cat(pieces, dim=2).transpose(1, 2).reshape(batch, length, width)
    return attention.out_proj(out)
