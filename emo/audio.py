"""Audio input for EMO: decode a voice clip, cut it, and turn it into per-video-frame wav2vec2 features.

The data path, in the order :func:`encode_audio` runs it::

    file --load_audio--> [C, T] float32 at the file's rate
         --trim-->       [C, T'] (the part of the clip that becomes video)
         --to_mono, resample--> [T16] at 16 kHz (wav2vec2's rate)
         --extract_wav2vec2_features--> [F, L, D]  (F video frames, L transformer layers, D hidden size)

EMO (arXiv 2402.17485, audio layers of the method section) conditions each video frame on the
wav2vec2 features of the frames around it (a window of +-m = 2 frames); :func:`window` builds
those windows.

Time conventions used throughout this module:

* Audio sample ``k`` occupies the interval ``[k, k + 1) / sample_rate`` seconds.
* Video frame ``i`` occupies ``[i, i + 1) / fps`` seconds, so its centre is ``(i + 0.5) / fps``.
* wav2vec2 frame ``j`` is computed from samples ``[hop * j, hop * j + receptive_field)`` at 16 kHz
  (hop 320 samples = 20 ms, receptive field 400 samples = 25 ms for every released wav2vec2),
  so its centre is ``(hop * j + receptive_field / 2) / 16000`` seconds = ``0.02 j + 0.0125`` s.

Video-frame features are the wav2vec2 features linearly interpolated at the video frame centres.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16000
"""Sample rate (Hz) wav2vec2 was trained on; :func:`encode_audio` resamples to it."""

_SUPPORTED_AUDIO_HINT = "give a wav/mp3/flac/ogg/m4a file"

ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def load_audio(path: Union[str, os.PathLike]) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of a file with PyAV (FFmpeg).

    Anything FFmpeg can demux works: wav, mp3, flac, ogg (vorbis/opus), m4a/aac, and the sound
    track of a video file (mp4, mkv, webm, ...). No resampling or channel mixing is done here.

    Args:
        path: file to read.

    Returns:
        ``(waveform, sample_rate)``: ``waveform`` is float32 ``[C, T]`` (C channels, T samples) on the
        CPU with full scale at +-1 (lossy codecs may overshoot 1 very slightly); ``sample_rate`` in Hz.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is a folder or an empty file, FFmpeg cannot decode it, it has no audio
            stream, or the audio stream holds no samples.
    """
    import av  # imported here so that the rest of the module works without PyAV installed

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"load_audio: audio file {path!r} does not exist; check the path "
            f"(relative paths are resolved from {os.getcwd()!r})"
        )
    if os.path.isdir(path):
        raise ValueError(f"load_audio: {path!r} is a folder, expected an audio file; {_SUPPORTED_AUDIO_HINT}")
    if os.path.getsize(path) == 0:
        raise ValueError(
            f"load_audio: {path!r} is empty (0 bytes), so the audio is empty; {_SUPPORTED_AUDIO_HINT}"
        )

    try:
        container = av.open(path, mode="r")
    except av.FFmpegError as error:
        raise ValueError(
            f"load_audio: {path!r} could not be decoded as audio: {error}; {_SUPPORTED_AUDIO_HINT}"
        ) from error

    with container:
        if not container.streams.audio:
            found = ", ".join(stream.type for stream in container.streams) or "no streams"
            raise ValueError(
                f"load_audio: {path!r} has no audio stream (found: {found}); "
                f"give an audio file (wav/mp3/flac/ogg/m4a) or a video that has a sound track"
            )
        stream = container.streams.audio[0]
        if len(container.streams.audio) > 1:
            logger.info(
                "load_audio: %r has %d audio streams; using the first", path, len(container.streams.audio)
            )

        buffer = _SampleBuffer(_expected_samples(container, stream))
        sample_rate: Optional[int] = None
        try:
            for frame in container.decode(stream):
                samples = _audio_frame_to_float32(frame)  # [C, n]
                if sample_rate is None:
                    sample_rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != sample_rate or samples.shape[0] != buffer.channels:
                    # Streams that change format midway are very rare; mixing them silently would
                    # desynchronise the sound, so refuse instead.
                    raise ValueError(
                        f"load_audio: {path!r} changes format midway (from {buffer.channels} channels at "
                        f"{sample_rate} Hz to {samples.shape[0]} channels at {frame.sample_rate} Hz); "
                        f"convert it to a plain wav file first"
                    )
                buffer.append(samples)
        except av.FFmpegError as error:
            raise ValueError(
                f"load_audio: {path!r} could not be decoded as audio: {error}; {_SUPPORTED_AUDIO_HINT}"
            ) from error

    if sample_rate is None or buffer.length == 0:
        raise ValueError(
            f"load_audio: the audio in {path!r} is empty (0 samples decoded); "
            f"give a file with at least some sound"
        )
    waveform = torch.from_numpy(buffer.samples())
    logger.debug(
        "load_audio: %r -> %d channels, %d samples at %d Hz (%.3f s)",
        path, waveform.shape[0], waveform.shape[1], sample_rate, waveform.shape[1] / sample_rate,
    )
    return waveform, sample_rate


def _expected_samples(container, stream) -> int:
    """The stream's length in samples as its header says (0 when it does not say)."""
    try:
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000  # av.time_base: microseconds
        else:
            return 0
        return max(0, int(math.ceil(seconds * stream.codec_context.sample_rate)))
    except (AttributeError, TypeError, ValueError, OverflowError):
        return 0


class _SampleBuffer:
    """Decoded samples gathered into one array sized from the header's length, so a long file is
    held once, not twice (a list of pieces and then their concatenation). The array grows by
    half again when a header under-states the length; unused room at the end is never touched,
    so it costs no memory."""

    def __init__(self, expected: int):
        self.expected = expected
        self.array: Optional[np.ndarray] = None
        self.length = 0

    @property
    def channels(self) -> int:
        return 0 if self.array is None else self.array.shape[0]

    def append(self, samples: np.ndarray) -> None:
        n = samples.shape[1]
        if self.array is None:
            # A little room past the header's length: codecs pad their last frame.
            self.array = np.empty((samples.shape[0], max(self.expected + 8192, n)), dtype=np.float32)
        if self.length + n > self.array.shape[1]:
            grown = np.empty((self.array.shape[0], max(self.length + n, self.array.shape[1] * 3 // 2)),
                             dtype=np.float32)
            grown[:, :self.length] = self.array[:, :self.length]
            self.array = grown
        self.array[:, self.length:self.length + n] = samples
        self.length += n

    def samples(self) -> np.ndarray:
        """float32 [C, T], contiguous: a view of the buffer (one channel, or a length the header
        gave exactly), else a copy."""
        return np.ascontiguousarray(self.array[:, :self.length])


# Full-scale value for each integer sample type FFmpeg can hand out.
_INTEGER_FULL_SCALE = {
    np.dtype(np.int16): 32768.0,
    np.dtype(np.int32): 2147483648.0,
    np.dtype(np.int64): 9223372036854775808.0,
}


def _audio_frame_to_float32(frame) -> np.ndarray:
    """Convert one decoded ``av.AudioFrame`` to float32 ``[C, n]`` with full scale at +-1."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        # Packed formats come back as one row of interleaved samples: [1, n * C] -> [C, n].
        data = data.reshape(-1, channels).T
    if data.dtype == np.uint8:
        # 8-bit PCM is unsigned with silence at 128.
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype in _INTEGER_FULL_SCALE:
        data = (data.astype(np.float64) / _INTEGER_FULL_SCALE[data.dtype]).astype(np.float32)
    else:
        data = data.astype(np.float32, copy=False)
    return np.ascontiguousarray(data)


# --------------------------------------------------------------------------------------------------
# Waveform helpers
# --------------------------------------------------------------------------------------------------


def as_channels_first(waveform: torch.Tensor, operation: str) -> torch.Tensor:
    """Bring ``[T]``, ``[C, T]`` or ComfyUI's ``[B, C, T]`` to ``[C, T]`` (batch item 0)."""
    if not isinstance(waveform, torch.Tensor):
        raise ValueError(
            f"{operation}: expected the waveform as a torch.Tensor, got {type(waveform).__name__}; "
            f"convert it with torch.as_tensor"
        )
    if waveform.dim() == 1:
        return waveform.unsqueeze(0)
    if waveform.dim() == 2:
        return waveform
    if waveform.dim() == 3:
        if waveform.shape[0] == 0:
            raise ValueError(
                f"{operation}: the waveform batch {tuple(waveform.shape)} is empty; give at least one clip"
            )
        if waveform.shape[0] > 1:
            logger.warning(
                "%s: waveform has a batch of %d clips %s; only the first is used",
                operation, waveform.shape[0], tuple(waveform.shape),
            )
        return waveform[0]
    raise ValueError(
        f"{operation}: waveform has shape {tuple(waveform.shape)}; expected [T], [C, T] or [B, C, T] "
        f"(samples last)"
    )


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of a waveform.

    Args:
        waveform: ``[T]``, ``[C, T]`` or ComfyUI's ``[B, C, T]`` (only batch item 0 is used).

    Returns:
        ``[T]``, float (float32 for integer input), on the input's device; for one channel of
        float samples, a view of the input (no copy).
    """
    channels_first = as_channels_first(waveform, "to_mono")
    if not channels_first.is_floating_point():
        channels_first = channels_first.float()
    if channels_first.shape[0] == 1:
        return channels_first[0]  # a view: no copy of a long mono clip (the mean of one row is itself)
    return channels_first.mean(dim=0)


def resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Change the sample rate of a waveform (band-limited, soxr "HQ", the resampler librosa uses).

    Args:
        waveform: ``[..., T]``, samples last, any float dtype and device.
        orig_sr: its sample rate in Hz.
        target_sr: the wanted sample rate in Hz.

    Returns:
        float32 ``[..., T']`` on the input's device with ``T' = ceil(T * target_sr / orig_sr)``
        (the length ``librosa.resample`` gives); the input itself (as float32) when the rates are equal.
    """
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        is_number = isinstance(rate, (int, float, np.integer)) and not isinstance(rate, bool)
        if not is_number or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"resample: {name} must be a positive number of Hz, got {rate!r}")
    if not isinstance(waveform, torch.Tensor) or waveform.dim() == 0:
        raise ValueError(
            f"resample: expected a waveform tensor with samples in the last dimension, "
            f"got {type(waveform).__name__}"
        )
    if orig_sr == target_sr:
        return waveform.to(torch.float32)
    length = waveform.shape[-1]
    new_length = math.ceil(length * target_sr / orig_sr)
    leading = waveform.shape[:-1]
    rows = math.prod(leading)
    if length == 0 or rows == 0:
        return torch.zeros((*leading, new_length), dtype=torch.float32, device=waveform.device)

    # soxr directly rather than librosa.resample: same algorithm, without librosa's slow first
    # import of scipy.signal. soxr wants [T, channels].
    import soxr

    samples = waveform.detach().to(device="cpu", dtype=torch.float32).reshape(rows, length)
    samples = samples.T.contiguous().numpy()
    resampled = soxr.resample(samples, orig_sr, target_sr, quality="HQ")  # [T'', rows]
    # soxr rounds the output length; pad or cut to ceil(T * ratio) so lengths are predictable.
    if resampled.shape[0] < new_length:
        resampled = np.pad(resampled, ((0, new_length - resampled.shape[0]), (0, 0)))
    resampled = np.ascontiguousarray(resampled[:new_length].T, dtype=np.float32)
    return torch.from_numpy(resampled).reshape(*leading, new_length).to(waveform.device)


def _exact_fps(fps: Union[float, int, Fraction], operation: str) -> Fraction:
    """Read a frame rate as an exact fraction.

    A float is read as the simplest fraction that rounds to it (29.97 -> 2997/100,
    30000/1001 -> 30000/1001), so durations that are whole frames at the intended rate do not pick
    up an extra frame from binary rounding.
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)):
        raise ValueError(f"{operation}: fps must be a number, got {fps!r}; give frames per second such as 25")
    if isinstance(fps, float) and not math.isfinite(fps):
        raise ValueError(
            f"{operation}: fps must be a finite number, got {fps!r}; give frames per second such as 25"
        )
    if fps <= 0:
        raise ValueError(f"{operation}: fps must be > 0, got {fps!r}; give frames per second such as 25")
    if isinstance(fps, float):
        simple = Fraction(fps).limit_denominator(1_000_000)
        return simple if float(simple) == fps else Fraction(repr(fps))
    return Fraction(fps)


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """Number of video frames needed to cover ``num_samples`` of audio: ``ceil(duration * fps)``.

    Computed with exact fractions: 2.3 s at 25 fps -> 58 frames, exactly 2.0 s at 25 fps -> 50 (not
    51). Any non-empty audio gives at least one frame; zero samples give zero frames.

    Args:
        num_samples: audio length in samples (>= 0).
        sample_rate: audio sample rate in Hz (> 0).
        fps: video frame rate in frames per second (> 0); floats such as 29.97 are read as the
            decimal they denote.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise ValueError(f"frame_count: num_samples must be an integer >= 0, got {num_samples!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(
            f"frame_count: sample_rate must be a positive integer number of Hz, got {sample_rate!r}"
        )
    exact = Fraction(int(num_samples), int(sample_rate)) * _exact_fps(fps, "frame_count")
    return math.ceil(exact)


def trim(
    waveform: torch.Tensor,
    sample_rate: int,
    start_seconds: float = 0.0,
    duration_seconds: Optional[float] = None,
) -> torch.Tensor:
    """Cut ``[start, start + duration)`` out of a waveform.

    Args:
        waveform: ``[C, T]`` (any ``[..., T]`` works; samples last).
        sample_rate: Hz.
        start_seconds: where the cut begins (>= 0, before the end of the audio); rounded to the
            nearest sample.
        duration_seconds: length of the cut (> 0), or ``None`` for "to the end". A duration that
            runs past the end is shortened to the end (logged).

    Returns:
        ``[C, T']``, a view of the input, at least one sample long.
    """
    if sample_rate is None or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"trim: sample_rate must be a positive number of Hz, got {sample_rate!r}")
    total = waveform.shape[-1]
    total_seconds = total / sample_rate
    if start_seconds is None:
        start_seconds = 0.0
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise ValueError(
            f"trim: start_seconds must be >= 0, got {start_seconds!r}; use 0 to start at the beginning"
        )
    start = int(round(start_seconds * sample_rate))
    if start >= total:
        raise ValueError(
            f"trim: start_seconds={start_seconds!r} is at or beyond the end of the audio "
            f"({total_seconds:.3f} s); "
            f"give a start below {total_seconds:.3f}"
        )
    if duration_seconds is None:
        end = total
    else:
        if not math.isfinite(duration_seconds) or duration_seconds <= 0:
            raise ValueError(
                f"trim: duration_seconds must be > 0, got {duration_seconds!r}; "
                f"leave it unset (None) to use the audio to its end"
            )
        end = start + max(1, int(round(duration_seconds * sample_rate)))
        if end > total:
            logger.info(
                "trim: asked for %.3f s from %.3f s but the audio ends at %.3f s; using %.3f s",
                duration_seconds, start_seconds, total_seconds, (total - start) / sample_rate,
            )
            end = total
    return waveform[..., start:end]


# --------------------------------------------------------------------------------------------------
# wav2vec2 features
# --------------------------------------------------------------------------------------------------


@dataclass
class AudioFeatures:
    """Audio conditioning for one clip, ready for the diffusion pipeline.

    Attributes:
        features: float32 ``[F, L, D]`` on the CPU: for each of the F video frames, the hidden states
            of all L wav2vec2 transformer layers (hidden size D).
        fps: video frame rate the features were aligned to (frames per second).
        waveform: float32 ``[C, T]`` on the CPU: the audio these features describe, at its own
            sample rate and channel count, to be muxed into the output video.
        sample_rate: sample rate of ``waveform`` in Hz.
    """

    features: torch.Tensor
    fps: float
    waveform: torch.Tensor
    sample_rate: int

    @property
    def num_frames(self) -> int:
        """Number of video frames F."""
        return int(self.features.shape[0])

    def duration_seconds(self) -> float:
        """Length of ``waveform`` in seconds."""
        return self.waveform.shape[-1] / self.sample_rate


def wav2vec2_geometry(config) -> tuple[int, int]:
    """Hop and receptive field, in input samples, of a wav2vec2 convolutional feature encoder.

    Returns:
        ``(hop, receptive_field)``; ``(320, 400)`` for every released wav2vec2 / HuBERT model.
    """
    hop, receptive_field = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        # Each layer widens the field by (kernel - 1) steps of the current input spacing.
        receptive_field += (kernel - 1) * hop
        hop *= stride
    return hop, receptive_field


def normalize_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the whole clip, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    Args:
        waveform: ``[T]``.

    Returns:
        float32 ``[T]``: ``(x - mean) / sqrt(var + 1e-7)`` (population variance; the 1e-7 keeps
        silence finite, as in the reference feature extractor).
    """
    flat = waveform.reshape(-1)
    mean, scale = normalization_statistics(flat)
    out = torch.empty(flat.shape, dtype=torch.float32)
    for i in range(0, flat.numel(), _BLOCK):
        out[i:i + _BLOCK] = _normalized(flat[i:i + _BLOCK], mean, scale)
    return out.reshape(waveform.shape)


def normalization_statistics(waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, scale)`` of :func:`normalize_waveform`, float64 scalars, from ``[T]``.

    In blocks: the sums are done in float64 (as one float64 pass would), but no float64 copy of a
    long clip is ever held (10 min at 16 kHz would be 77 MB each)."""
    flat = waveform.reshape(-1)
    mean = sum(flat[i:i + _BLOCK].to(torch.float64).sum() for i in range(0, flat.numel(), _BLOCK)) / flat.numel()
    squares = sum(((flat[i:i + _BLOCK].to(torch.float64) - mean) ** 2).sum() for i in range(0, flat.numel(), _BLOCK))
    return mean, torch.sqrt(squares / flat.numel() + 1e-7)


def _normalized(segment: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """One piece of a clip normalised with the whole clip's statistics: float32, elementwise, so a
    piece equals the same samples of :func:`normalize_waveform`'s output exactly."""
    return ((segment.to(torch.float64) - mean) / scale).to(torch.float32)


_BLOCK = 1 << 20  # samples per block of normalize_waveform


def wav2vec2_hidden_states(
    model,
    waveform_16k: torch.Tensor,
    *,
    chunk_seconds: float = 20.0,
    context_seconds: float = 1.0,
    normalize: bool = True,
    progress: Optional[ProgressCallback] = None,
) -> torch.Tensor:
    """Run wav2vec2 over a clip of any length and stack the hidden states of its transformer layers.

    Memory: self-attention is quadratic in length, so the clip is cut into chunks of
    ``chunk_seconds`` (in whole wav2vec2 frames). Each chunk is run with ``context_seconds`` of
    extra audio on both sides, and only the chunk's own frames are kept. Chunk inputs start on the
    20 ms frame grid, so a kept frame sees exactly the same samples as it would in one long run.

    Two parts of wav2vec2 look at the whole input rather than a local window:

    * wav2vec2-base style encoders (``feat_extract_norm="group"``) normalise the first conv layer
      per channel over all time steps. Its statistics are first gathered over the whole clip (a
      cheap pass through that one conv layer) and imposed on every chunk via a forward hook that
      is removed afterwards, so chunking does not change this normalisation.
    * Self-attention: frames more than ``context_seconds`` outside the chunk are not seen. This is
      the remaining (small) difference from one long run.

    A clip of at most one chunk is run in a single plain call on the whole waveform, which is
    exactly the unchunked result. Only one chunk is on the model's device at a time; results are
    gathered on the CPU. (While a chunked call runs, the hook is on the shared model: do not run
    the same model instance from two threads at once.)

    Args:
        model: a ``transformers.Wav2Vec2Model`` (or compatible: ``config.conv_kernel``,
            ``config.conv_stride`` and ``output_hidden_states``), on any device and dtype.
            It is not switched to eval mode here; a model in training mode is used as is (warned).
        waveform_16k: mono ``[T]`` at 16 kHz.
        chunk_seconds: audio per model call (> 0).
        context_seconds: extra audio on each side of a chunk (>= 0).
        normalize: zero-mean / unit-variance the whole clip first (what wav2vec2 was trained with).
        progress: optional ``progress(done_chunks, total_chunks)`` called after each chunk.

    Returns:
        float32 ``[N, L, D]`` on the CPU: ``N = (T - receptive_field) // hop + 1`` wav2vec2 frames
        (one, for a clip shorter than the receptive field, which is padded with zeros), L transformer
        layers (``hidden_states[1:]``; the CNN projection ``hidden_states[0]`` is left out), hidden size D.
    """
    if not math.isfinite(chunk_seconds) or chunk_seconds <= 0:
        raise ValueError(
            f"wav2vec2_hidden_states: chunk_seconds must be > 0, got {chunk_seconds!r}; 20 is a good value"
        )
    if not math.isfinite(context_seconds) or context_seconds < 0:
        raise ValueError(
            f"wav2vec2_hidden_states: context_seconds must be >= 0, got {context_seconds!r}; 1 is a good value"
        )
    if not isinstance(waveform_16k, torch.Tensor) or waveform_16k.dim() != 1:
        is_tensor = isinstance(waveform_16k, torch.Tensor)
        shape = tuple(waveform_16k.shape) if is_tensor else type(waveform_16k).__name__
        raise ValueError(
            f"wav2vec2_hidden_states: expected a mono waveform [T] at 16 kHz, got {shape}; use to_mono first"
        )
    if waveform_16k.shape[0] == 0:
        raise ValueError("wav2vec2_hidden_states: the audio is empty (0 samples); give at least some sound")
    if model.training:
        logger.warning(
            "wav2vec2_hidden_states: the wav2vec2 model is in training mode, so dropout makes the features "
            "random; call model.eval() after loading it"
        )

    hop, receptive_field = wav2vec2_geometry(model.config)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype

    # Normalise on the CPU in float64 for stable statistics over long clips, then cast. A clip
    # long enough for wav2vec2 is normalised chunk by chunk as the chunks are run (the same values),
    # so no normalised copy of a long clip is held: memory stays flat in the audio's length.
    samples = waveform_16k.detach().to("cpu")
    if samples.shape[0] < receptive_field:
        samples = normalize_waveform(samples) if normalize else samples.to(torch.float32)
        # Too short for even one wav2vec2 frame. Zeros are the clip's mean after normalisation,
        # i.e. "nothing more happens", which is the least surprising padding.
        logger.debug(
            "wav2vec2_hidden_states: padding %d samples with zeros to the receptive field of %d",
            samples.shape[0], receptive_field,
        )
        samples = torch.nn.functional.pad(samples, (0, receptive_field - samples.shape[0]))
        statistics = None  # normalised above
    else:
        statistics = normalization_statistics(samples) if normalize else None

    def prepare(segment: torch.Tensor) -> torch.Tensor:
        """A piece of the clip as wav2vec2 takes it (normalised, float32)."""
        return segment.to(torch.float32) if statistics is None else _normalized(segment, *statistics)

    total_samples = samples.shape[0]
    total_frames = (total_samples - receptive_field) // hop + 1

    chunk_frames = max(1, int(round(chunk_seconds * TARGET_SAMPLE_RATE / hop)))
    context_frames = int(round(context_seconds * TARGET_SAMPLE_RATE / hop))
    num_chunks = math.ceil(total_frames / chunk_frames)

    group_norm = _first_layer_group_norm(model) if num_chunks > 1 else None
    hook = None
    if group_norm is not None:
        conv, norm = group_norm
        mean, variance = _whole_clip_channel_statistics(
            conv, samples, block_samples=chunk_frames * hop, device=device, dtype=dtype, prepare=prepare
        )
        hook = norm.register_forward_hook(_fixed_statistics_group_norm(mean, variance))
    elif num_chunks > 1 and getattr(model.config, "feat_extract_norm", None) == "group":
        logger.warning(
            "wav2vec2_hidden_states: could not find the first conv layer's GroupNorm in %s; each chunk "
            "is normalised on its own, so features of clips longer than chunk_seconds=%s differ slightly "
            "from one long run",
            type(model).__name__, chunk_seconds,
        )
    try:
        kept = _run_chunks(
            model, samples, total_frames, chunk_frames, context_frames, hop, receptive_field,
            device, dtype, progress, prepare,
        )
    finally:
        if hook is not None:
            hook.remove()

    return kept


def _run_chunks(
    model, samples, total_frames, chunk_frames, context_frames, hop, receptive_field, device, dtype, progress,
    prepare=None,
) -> torch.Tensor:
    """Run the model chunk by chunk; returns the frames, float32 ``[total_frames, L, D]`` on the CPU,
    written chunk by chunk into one tensor made outside inference mode (an ordinary tensor that
    later training code may use; one allocation rather than a list and its concatenation, which
    left the heap fragmented in proportion to the clip's length).
    ``prepare(segment)``: what a piece of ``samples`` becomes before the model sees it (normalised)."""
    total_samples = samples.shape[0]
    num_chunks = math.ceil(total_frames / chunk_frames)
    kept: Optional[torch.Tensor] = None
    for chunk in range(num_chunks):
        keep_start = chunk * chunk_frames
        keep_end = min(total_frames, keep_start + chunk_frames)
        input_start_frame = max(0, keep_start - context_frames)
        input_end_frame = min(total_frames, keep_end + context_frames)
        start_sample = input_start_frame * hop
        # The last chunk takes the tail too (samples past the last full frame), so that a single
        # chunk is the plain whole-clip call.
        end_sample = (
            total_samples if input_end_frame == total_frames else (input_end_frame - 1) * hop + receptive_field
        )
        segment = samples[start_sample:end_sample]
        segment = (segment if prepare is None else prepare(segment)).to(device=device, dtype=dtype)
        with torch.inference_mode():
            outputs = model(segment.unsqueeze(0), output_hidden_states=True)
            layers = torch.stack(outputs.hidden_states[1:], dim=2)[0]  # [n_local, L, D]
            local = layers[keep_start - input_start_frame : keep_end - input_start_frame]
            assert local.shape[0] == keep_end - keep_start, "chunk frames must line up with the global grid"
            local = local.to(device="cpu", dtype=torch.float32)
        if kept is None:
            kept = torch.empty((total_frames, *local.shape[1:]), dtype=torch.float32)
        kept[keep_start:keep_end] = local
        del outputs, layers, local
        if progress is not None:
            progress(chunk + 1, num_chunks)
    return kept


def _first_layer_group_norm(model) -> Optional[tuple[torch.nn.Conv1d, torch.nn.GroupNorm]]:
    """The first conv layer of a wav2vec2 feature encoder and its per-channel GroupNorm, if it has one.

    wav2vec2-base (``feat_extract_norm="group"``) normalises that layer's output per channel over
    the whole input; ``"layer"`` models (wav2vec2-large-lv60) normalise per time step and return None.
    """
    try:
        first = model.feature_extractor.conv_layers[0]
        conv, norm = first.conv, first.layer_norm
    except (AttributeError, IndexError, TypeError):
        return None
    per_channel = isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == norm.num_channels
    if isinstance(conv, torch.nn.Conv1d) and per_channel:
        return conv, norm
    return None


def _whole_clip_channel_statistics(
    conv: torch.nn.Conv1d, samples: torch.Tensor, *, block_samples: int, device, dtype, prepare=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of ``conv(samples)`` over the whole clip, in blocks.

    Args:
        samples: ``[T]`` (CPU); blocks of about ``block_samples`` go to ``device`` one at a time.
        prepare: what a block of ``samples`` becomes before the conv (normalised), or None.

    Returns:
        ``(mean, variance)``, float64 ``[C]`` on the CPU, equal to what ``GroupNorm`` would compute
        on the output of the whole clip.
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    positions = (samples.shape[0] - kernel) // stride + 1
    block_positions = max(1, block_samples // stride)
    count = 0
    mean = torch.zeros(conv.out_channels, dtype=torch.float64)
    squares = torch.zeros(conv.out_channels, dtype=torch.float64)  # sum of squared deviations
    with torch.inference_mode():
        for first in range(0, positions, block_positions):
            last = min(positions, first + block_positions)  # output positions [first, last)
            segment = samples[first * stride : (last - 1) * stride + kernel]
            segment = (segment if prepare is None else prepare(segment)).to(device=device, dtype=dtype)
            output = conv(segment[None, None])[0].float()  # [C, last - first]
            block_mean = output.mean(dim=1)
            block_squares = ((output - block_mean[:, None]) ** 2).sum(dim=1)
            block_mean, block_squares = block_mean.double().cpu(), block_squares.double().cpu()
            # Chan et al.'s pairwise update: combining block statistics keeps float64 accuracy
            # without holding the whole clip's activations.
            n = last - first
            delta = block_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            squares = squares + block_squares + delta**2 * (count * n / total)
            count = total
    return mean, squares / count


def _fixed_statistics_group_norm(mean: torch.Tensor, variance: torch.Tensor):
    """Forward hook for a per-channel ``GroupNorm`` that renormalises with given statistics.

    The hook recomputes the output from the layer's input ``[B, C, t]`` with the whole-clip
    ``mean``/``variance`` ``[C]`` instead of the chunk's own, keeping the layer's eps and affine.
    """

    def hook(module: torch.nn.GroupNorm, inputs, output):
        x = inputs[0]
        shape = (1, -1, 1)
        m = mean.to(device=x.device, dtype=torch.float32).view(shape)
        v = variance.to(device=x.device, dtype=torch.float32).view(shape)
        normalised = (x.float() - m) / torch.sqrt(v + module.eps)
        if module.affine:
            normalised = normalised * module.weight.float().view(shape) + module.bias.float().view(shape)
        return normalised.to(output.dtype)

    return hook


def align_to_video_frames(
    frames: torch.Tensor,
    num_frames: int,
    fps: float,
    *,
    hop: int = 320,
    receptive_field: int = 400,
    sample_rate: int = TARGET_SAMPLE_RATE,
) -> torch.Tensor:
    """Resample wav2vec2 frames (50 Hz) onto video frames by linear interpolation in time.

    Video frame ``i`` is centred at ``t_i = (i + 0.5) / fps`` seconds; wav2vec2 frame ``j`` is
    centred at ``(hop * j + receptive_field / 2) / sample_rate`` seconds. Each video frame takes
    the linear interpolation of the two wav2vec2 frames around ``t_i``; times before the first or
    after the last wav2vec2 centre take that frame (clamped), which covers the first 12.5 ms and the
    padded end of the last video frame.

    Args:
        frames: ``[N, ...]`` wav2vec2 frames, N >= 1.
        num_frames: F, the number of video frames (>= 1).
        fps: video frames per second (> 0).
        hop, receptive_field: wav2vec2 frame spacing and window, in samples at ``sample_rate``.

    Returns:
        ``[F, ...]`` in the dtype of ``frames``.
    """
    if frames.shape[0] == 0:
        raise ValueError("align_to_video_frames: no wav2vec2 frames to interpolate; give at least one")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"align_to_video_frames: num_frames must be an integer >= 1, got {num_frames!r}")
    exact_fps = _exact_fps(fps, "align_to_video_frames")

    # Positions on the wav2vec2 frame axis, in float64 so long clips keep sub-frame accuracy.
    centres = (torch.arange(num_frames, dtype=torch.float64) + 0.5) / float(exact_fps)
    position = (centres * sample_rate - receptive_field / 2) / hop
    position = position.clamp(0, frames.shape[0] - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=frames.shape[0] - 1)
    weight = (position - lower.to(torch.float64)).to(frames.dtype)
    weight = weight.reshape(-1, *([1] * (frames.dim() - 1)))
    return frames[lower] * (1 - weight) + frames[upper] * weight


def extract_wav2vec2_features(
    model,
    waveform_16k: torch.Tensor,
    num_frames: int,
    *,
    chunk_seconds: float = 20.0,
    context_seconds: float = 1.0,
    normalize: bool = True,
    progress: Optional[ProgressCallback] = None,
    fps: Optional[float] = None,
) -> torch.Tensor:
    """wav2vec2 hidden states of every transformer layer, one row per video frame.

    Runs :func:`wav2vec2_hidden_states` (chunked, bounded memory; see there) and
    :func:`align_to_video_frames` (linear interpolation at the video frame centres).

    Args:
        model: ``transformers.Wav2Vec2Model`` in eval mode, any device and dtype.
        waveform_16k: mono ``[T]`` at 16 kHz.
        num_frames: F, number of video frames to produce (>= 1), normally
            ``frame_count(T, 16000, fps)``.
        chunk_seconds, context_seconds, normalize, progress: see :func:`wav2vec2_hidden_states`.
        fps: video frame rate. When omitted, the F frames are spread evenly over the clip
            (``fps = F / duration``), which matches ``fps`` to within one frame over the clip.

    Returns:
        float32 ``[F, L, D]`` on the CPU.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(
            f"extract_wav2vec2_features: num_frames must be an integer >= 1, got {num_frames!r}; "
            f"use frame_count(num_samples, sample_rate, fps)"
        )
    hidden = wav2vec2_hidden_states(
        model,
        waveform_16k,
        chunk_seconds=chunk_seconds,
        context_seconds=context_seconds,
        normalize=normalize,
        progress=progress,
    )
    if fps is None:
        fps = Fraction(int(num_frames) * TARGET_SAMPLE_RATE, waveform_16k.shape[0])
    hop, receptive_field = wav2vec2_geometry(model.config)
    return align_to_video_frames(hidden, int(num_frames), fps, hop=hop, receptive_field=receptive_field)


def window(
    features: torch.Tensor,
    frame_indices: Union[torch.Tensor, range, Sequence[int]],
    radius: int,
) -> torch.Tensor:
    """Neighbouring-frame windows of per-frame features (EMO's +-m frames, m = 2 in the paper).

    Args:
        features: ``[F, ...]`` (normally ``[F, L, D]``).
        frame_indices: the video frames to build windows for (1-D tensor, range or list of ints).
        radius: m >= 0; each window has ``2 m + 1`` frames.

    Returns:
        ``[len(frame_indices), 2 m + 1, ...]``: row ``k`` stacks ``features[clamp(i_k + j, 0, F - 1)]``
        for ``j = -m .. m``. Indices outside ``0 .. F-1`` (including requested frames past the end,
        which is how the last partial clip of a video is padded) are clamped to the nearest frame.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"window: radius must be an integer >= 0, got {radius!r}; EMO uses 2")
    if features.dim() == 0 or features.shape[0] == 0:
        raise ValueError(
            f"window: features must have at least one frame, got shape {tuple(features.shape)}; "
            f"expected [F, L, D]"
        )
    indices = torch.as_tensor(list(frame_indices) if isinstance(frame_indices, range) else frame_indices)
    if indices.dim() != 1 or (indices.numel() > 0 and indices.is_floating_point()):
        raise ValueError(
            f"window: frame_indices must be a 1-D list of integers, got {tuple(indices.shape)} {indices.dtype}"
        )
    offsets = torch.arange(-int(radius), int(radius) + 1)
    gathered = (indices.long().cpu().unsqueeze(1) + offsets.unsqueeze(0)).clamp(0, features.shape[0] - 1)
    return features[gathered.to(features.device)]  # [N, 2m+1, ...]


def encode_audio(
    model,
    waveform: torch.Tensor,
    sample_rate: int,
    fps: float,
    *,
    start_seconds: float = 0.0,
    duration_seconds: Optional[float] = None,
    chunk_seconds: float = 20.0,
    progress: Optional[ProgressCallback] = None,
) -> AudioFeatures:
    """Turn a waveform into per-video-frame wav2vec2 features: trim, mono, 16 kHz, wav2vec2, align.

    Args:
        model: ``transformers.Wav2Vec2Model`` in eval mode, any device and dtype.
        waveform: ``[T]``, ``[C, T]`` or ComfyUI's ``[B, C, T]`` (batch item 0), at ``sample_rate``.
        sample_rate: Hz.
        fps: video frames per second (> 0).
        start_seconds, duration_seconds: the part of the audio to use (see :func:`trim`).
        chunk_seconds: audio per wav2vec2 call, bounds memory (see :func:`wav2vec2_hidden_states`).
        progress: optional ``progress(done_chunks, total_chunks)``.

    Returns:
        :class:`AudioFeatures` with ``F = frame_count(len(trimmed), sample_rate, fps)`` frames,
        ``features`` ``[F, L, D]`` and ``waveform`` the trimmed audio, float32 ``[C, T']`` on the CPU
        at the original rate and channel count (for muxing the sound in sync with the video).
    """
    exact_fps = _exact_fps(fps, "encode_audio")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(
            f"encode_audio: sample_rate must be a positive integer number of Hz, got {sample_rate!r}"
        )
    channels_first = as_channels_first(waveform, "encode_audio")
    if channels_first.shape[-1] == 0:
        raise ValueError("encode_audio: the audio is empty (0 samples); give a clip with at least some sound")

    trimmed = trim(channels_first, sample_rate, start_seconds, duration_seconds)
    trimmed = trimmed.detach().to(device="cpu", dtype=torch.float32).contiguous()
    num_frames = frame_count(trimmed.shape[-1], int(sample_rate), fps)
    mono_16k = resample(to_mono(trimmed), int(sample_rate), TARGET_SAMPLE_RATE)
    features = extract_wav2vec2_features(
        model, mono_16k, num_frames, chunk_seconds=chunk_seconds, progress=progress, fps=exact_fps
    )
    logger.debug(
        "encode_audio: %.3f s at %d Hz -> %d frames at %s fps, features %s",
        trimmed.shape[-1] / sample_rate, sample_rate, num_frames, fps, tuple(features.shape),
    )
    return AudioFeatures(features=features, fps=float(fps), waveform=trimmed, sample_rate=int(sample_rate))
