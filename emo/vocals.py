"""Vocal separation with an MDX-Net ONNX model (UVR's ``Kim_Vocal_2.onnx``), the way Hallo does it.

Hallo (``hallo/datasets/audio_processor.py``) separates the vocals of the driving audio before
wav2vec2 with the ``audio-separator`` package (pinned 0.17.2): ``Separator(output_single_stem=
"vocals")`` with every other setting at its default, running ``Kim_Vocal_2.onnx`` from
``pretrained_models/audio_separator/``. That writes the vocals as a 16-bit stereo wav at 44.1 kHz,
which Hallo resamples to 16 kHz with the ffmpeg command line and loads with librosa (mono).

This module reproduces that separation without audio-separator (checked against its output in
``tests/emo/test_vocals.py``). The data path of :func:`separate_vocals`::

    waveform [C, T] at any rate
      --stereo (mono duplicated), resample to 44.1 kHz (soxr HQ, librosa.load's default)--> mix [2, N]
      --scale to a 0.9 peak if louder-->
      --pad n_fft/2 zeros in front, zeros behind up to whole segments-->
      --every 0.75 chunk, a chunk of hop * (dim_t - 1) samples:
            STFT (n_fft, hop 1024, periodic Hann, centred, reflect padding), keep bins < dim_f,
            zero bins 0..2 -> [1, 4, dim_f, dim_t] (L re, L im, R re, R im) -> model ->
            zero bins >= dim_f -> inverse STFT -> times a symmetric Hann over the chunk, summed;
            the Hann weights summed alongside
      --divide by the summed weights, drop the padding, x compensate, scale to a 0.9 peak if louder
        (twice, as audio-separator does)-->
    vocals [2, N] at 44.1 kHz, float32

Only the chunks that overlap the current one are held (two chunk-sized buffers), so memory grows
with the audio's length only through the input and the output themselves.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

SEPARATION_SAMPLE_RATE = 44100
"""Hz. audio-separator loads every input at this rate (``Separator(sample_rate=44100)``)."""

MODEL_FILE_HINT = (
    "Kim_Vocal_2.onnx is in pretrained_models/audio_separator/ of a Hallo download "
    "(huggingface.co/fudan-generative-ai/hallo); in ComfyUI put it in models/audio_separator/"
)

# UVR identifies a model file by the MD5 of its last 10,000 KiB (the whole file when smaller);
# audio-separator's Separator.get_model_hash does the same.
_HASH_TAIL_BYTES = 10000 * 1024
# audio-separator's MDXSeparator.run_model zeroes the three lowest STFT bins before the model.
_ZEROED_LOW_BINS = 3

ProgressCallback = Callable[[int, int], None]


class SeparationCancelled(RuntimeError):
    """Raised between chunks when the caller's ``should_cancel()`` returns True."""


@dataclass(frozen=True)
class MDXModelSpec:
    """The constants an MDX-Net ONNX model was trained with (UVR's model data, keyed by file hash).

    name: the released file name.
    tail_md5: UVR's hash of the released file (see :func:`model_tail_md5`).
    n_fft: STFT size; the model sees the lowest ``dim_f`` of its ``n_fft // 2 + 1`` bins.
    dim_f, dim_t: frequency bins and STFT frames of one model input, ``[batch, 4, dim_f, dim_t]``.
    compensate: gain applied to the model's output.
    hop_length: STFT hop; 1024 for every MDX-Net model (hard-coded in UVR).
    """

    name: str
    tail_md5: str
    n_fft: int
    dim_f: int
    dim_t: int
    compensate: float
    hop_length: int = 1024

    def __post_init__(self):
        if self.dim_f > self.n_fft // 2 + 1:
            raise ValueError(f"MDXModelSpec {self.name}: dim_f={self.dim_f} exceeds the {self.n_fft // 2 + 1} "
                             f"bins of n_fft={self.n_fft}")
        if self.dim_t < 2 or self.hop_length <= 0:
            raise ValueError(f"MDXModelSpec {self.name}: dim_t={self.dim_t} and hop_length={self.hop_length} "
                             "must be at least 2 and positive")

    @property
    def chunk_size(self) -> int:
        """Samples per model call: dim_t STFT frames of a centred STFT."""
        return self.hop_length * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        return self.n_fft // 2


# From UVR's mdx_model_data/model_data_new.json (github.com/TRvlvr/application_data), the entry
# for the released Kim_Vocal_2.onnx (66,759,214 bytes, tail MD5 970b3f94...): compensate 1.009,
# mdx_dim_f_set 3072, mdx_dim_t_set 8 (dim_t = 2**8), mdx_n_fft_scale_set 7680, primary stem
# Vocals (so the model's output is the vocals; no subtraction from the mix).
KIM_VOCAL_2 = MDXModelSpec(name="Kim_Vocal_2.onnx", tail_md5="970b3f9492014d18fefeedfe4773cb42",
                           n_fft=7680, dim_f=3072, dim_t=256, compensate=1.009)

KNOWN_MODELS: tuple[MDXModelSpec, ...] = (KIM_VOCAL_2,)
"""The vocal models this module runs: every one has Vocals as its primary stem."""


@dataclass(frozen=True)
class SeparationSettings:
    """Per-run choices; the defaults are audio-separator's, which Hallo leaves untouched.

    overlap: fraction of a chunk shared with the next (``mdx_params["overlap"]``), 0 <= overlap < 1.
    peak: the input and the vocals are scaled down to this peak when louder
        (``normalization_threshold``).
    """

    overlap: float = 0.25
    peak: float = 0.9

    def __post_init__(self):
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"SeparationSettings: overlap must be in [0, 1), got {self.overlap!r}")
        if not self.peak > 0:
            raise ValueError(f"SeparationSettings: peak must be positive, got {self.peak!r}")


# --------------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------------


def model_tail_md5(path: Union[str, os.PathLike]) -> str:
    """UVR's identity of a model file: the MD5 of its last 10,000 KiB (of all of it when smaller)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _HASH_TAIL_BYTES))
        return hashlib.md5(handle.read()).hexdigest()


def _supported_list() -> str:
    return ", ".join(f"{spec.name} (UVR hash {spec.tail_md5})" for spec in KNOWN_MODELS)


def check_model_file(path: Union[str, os.PathLike]) -> Path:
    """The model path if it is a file; FileNotFoundError saying where Kim_Vocal_2.onnx comes from."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"separate_vocals: no vocal separation model at {path}; {MODEL_FILE_HINT}")
    return path


def identify_model(path: Union[str, os.PathLike]) -> MDXModelSpec:
    """The :class:`MDXModelSpec` of a model file: by UVR's hash of its content, as audio-separator
    looks it up, else by its file name (a re-exported copy; logged); ValueError if neither is known."""
    path = check_model_file(path)
    digest = model_tail_md5(path)
    for spec in KNOWN_MODELS:
        if spec.tail_md5 == digest:
            return spec
    for spec in KNOWN_MODELS:
        if path.name.lower() == spec.name.lower():
            logger.warning("separate_vocals: %s has UVR hash %s, not the released %s's %s; using %s's settings "
                           "because of its name", path, digest, spec.name, spec.tail_md5, spec.name)
            return spec
    raise ValueError(
        f"separate_vocals: {path.name} (UVR hash {digest}) is not a vocal separation model this pack knows; "
        f"supported: {_supported_list()}. {MODEL_FILE_HINT}"
    )


# --------------------------------------------------------------------------------------------------
# Running the ONNX model
# --------------------------------------------------------------------------------------------------


class _OnnxRuntimeEngine:
    """ONNX Runtime (the `onnxruntime` or `onnxruntime-gpu` package), as audio-separator runs it."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: torch.device):
        import onnxruntime

        available = onnxruntime.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in available:
                providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
            else:
                logger.warning("separate_vocals: onnxruntime has no CUDA provider (install onnxruntime-gpu); "
                               "the model runs on the CPU")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"separate_vocals: onnxruntime cannot load {path} ({_short(error)}); the "
                             "file is damaged or not an ONNX model: download it again") from error
        inputs = self._session.get_inputs()
        self._input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)

    def __call__(self, spec: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: spec})[0]


class _OpenCVEngine:
    """OpenCV's DNN module (`cv2.dnn.readNetFromONNX`), for installs without onnxruntime."""

    name = "opencv"
    input_shape = None  # OpenCV does not report the declared input shape

    def __init__(self, path: Path, device: torch.device):
        import cv2

        if device.type != "cpu":
            logger.info("separate_vocals: OpenCV DNN runs the model on the CPU")
        self._path = path
        self._net = cv2.dnn.readNetFromONNX(str(path))

    def __call__(self, spec: np.ndarray) -> np.ndarray:
        try:
            self._net.setInput(spec)
            return np.asarray(self._net.forward(), dtype=np.float32)
        except Exception as error:  # cv2.error: a layer OpenCV cannot compute
            raise ImportError(f"separate_vocals: OpenCV's DNN module cannot run {self._path.name} "
                              f"({_short(error)}); {_INSTALL_HINT}") from error


_ENGINES = {"onnxruntime": _OnnxRuntimeEngine, "opencv": _OpenCVEngine}


def _short(error: Exception) -> str:
    """An engine's error on one line, cut to 200 characters (OpenCV's span several lines)."""
    return " ".join(str(error).split())[:200]
_INSTALL_HINT = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"


def _open_engine(path: Path, device: torch.device, engine: str):
    if engine not in ("auto", *_ENGINES):
        raise ValueError(f"separate_vocals: engine must be 'auto', 'onnxruntime' or 'opencv', got {engine!r}")
    if engine in ("auto", "onnxruntime"):
        try:
            return _OnnxRuntimeEngine(path, device)
        except ImportError as error:
            if engine == "onnxruntime":
                raise ImportError(f"separate_vocals: onnxruntime is not installed ({error}); "
                                  f"{_INSTALL_HINT}") from error
            logger.info("separate_vocals: onnxruntime is not installed; trying OpenCV's DNN module")
    try:
        return _OpenCVEngine(path, device)
    except ImportError as error:
        raise ImportError(f"separate_vocals: running {path.name} needs onnxruntime; {_INSTALL_HINT}") from error
    except Exception as error:  # cv2.error: OpenCV cannot read this graph
        raise ImportError(
            f"separate_vocals: OpenCV's DNN module cannot run {path.name} ({_short(error)}); "
            f"{_INSTALL_HINT}"
        ) from error


# --------------------------------------------------------------------------------------------------
# The separator
# --------------------------------------------------------------------------------------------------


def _peak_gain(wave: np.ndarray, peak: float) -> Optional[np.float32]:
    """The gain that brings `wave`'s peak down to `peak`, None when it is not louder.

    Computed in float64 and applied in float32, as audio-separator's spec_utils.normalize does
    under NumPy 1.x (Hallo pins 1.26). max and -min instead of abs: no array-sized temporary.
    """
    loudest = max(float(wave.max()), -float(wave.min())) if wave.size else 0.0
    return np.float32(peak / loudest) if loudest > peak else None


def _scale_to_peak(wave: np.ndarray, peak: float) -> None:
    """Scale `wave` (float32) in place so that its peak is at most `peak`."""
    gain = _peak_gain(wave, peak)
    if gain is not None:
        wave *= gain


class VocalSeparator:
    """An MDX-Net vocal model, loaded once, to separate any number of clips.

    Args:
        model_path: the .onnx file (Kim_Vocal_2.onnx).
        spec: the model's constants; None: identified from the file (:func:`identify_model`).
        device: where the STFTs run and, with onnxruntime-gpu, the model ('cpu', 'cuda', ...).
        engine: 'auto' (onnxruntime if installed, else OpenCV DNN), 'onnxruntime' or 'opencv'.
        settings: overlap and peak (:class:`SeparationSettings`; defaults = Hallo's).
    """

    def __init__(self, model_path: Union[str, os.PathLike], *, spec: Optional[MDXModelSpec] = None,
                 device: Union[str, torch.device] = "cpu", engine: str = "auto",
                 settings: Optional[SeparationSettings] = None):
        path = check_model_file(model_path)
        self.spec = identify_model(path) if spec is None else spec
        self.settings = SeparationSettings() if settings is None else settings
        self.device = torch.device(device)
        self.model_path = path
        self._engine = _open_engine(path, self.device, engine)
        self.engine = self._engine.name
        self._check_input_shape()
        self._window = torch.hann_window(self.spec.n_fft, periodic=True, device=self.device)
        if self.engine == "opencv":
            # OpenCV reads graphs it cannot compute: one run on silence now, not a failure mid-clip
            self._engine(np.zeros((1, 4, self.spec.dim_f, self.spec.dim_t), dtype=np.float32))

    def _check_input_shape(self) -> None:
        """The declared input [batch, 4, dim_f, dim_t] must agree with the spec where it is fixed."""
        shape = self._engine.input_shape
        if shape is None:
            return
        expected = (None, 4, self.spec.dim_f, self.spec.dim_t)
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int) and d > 0]
        if len(shape) != 4 or any(expected[i] is not None and d != expected[i] for i, d in fixed):
            raise ValueError(
                f"separate_vocals: {self.model_path.name} takes input {list(shape)}, but {self.spec.name} "
                f"needs [batch, 4, {self.spec.dim_f}, {self.spec.dim_t}]; this file is not {self.spec.name}. "
                f"Supported: {_supported_list()}"
            )

    # ---- one chunk ----------------------------------------------------------------------------
    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """[2, chunk_size] float32 mixture samples -> [2, chunk_size] float32 model output samples."""
        spec = self.spec
        waves = torch.from_numpy(chunk).to(self.device)
        stft = torch.stft(waves, n_fft=spec.n_fft, hop_length=spec.hop_length, window=self._window,
                          center=True, return_complex=True)  # [2, n_fft/2+1, dim_t]
        # [2, dim_f, T] complex -> [2, 2, dim_f, T] (re, im) -> [1, 4, dim_f, T]: L re, L im, R re, R im
        kept = torch.view_as_real(stft[:, :spec.dim_f]).permute(0, 3, 1, 2)
        model_in = kept.reshape(1, 4, spec.dim_f, stft.shape[-1])  # copies into this layout
        model_in[:, :, :_ZEROED_LOW_BINS] *= 0
        model_out = self._engine(model_in.cpu().numpy())
        if model_out.shape != (1, 4, spec.dim_f, spec.dim_t):
            raise ValueError(f"separate_vocals: {self.model_path.name} returned {list(model_out.shape)}, expected "
                             f"[1, 4, {spec.dim_f}, {spec.dim_t}]; it is not an MDX-Net vocal model")
        out = torch.from_numpy(np.ascontiguousarray(model_out, dtype=np.float32)).to(self.device)
        out = out.reshape(2, 2, spec.dim_f, -1)  # [channel, re/im, dim_f, T]
        full = torch.zeros_like(stft)  # bins >= dim_f stay zero
        full[:, :spec.dim_f] = torch.complex(out[:, 0], out[:, 1])
        waves = torch.istft(full, n_fft=spec.n_fft, hop_length=spec.hop_length, window=self._window, center=True)
        return waves.cpu().numpy()

    # ---- a whole clip -------------------------------------------------------------------------
    def separate(self, waveform: torch.Tensor, sample_rate: int, *, progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[Callable[[], bool]] = None) -> tuple[torch.Tensor, int]:
        """The vocals of a clip. See :func:`separate_vocals`."""
        mix = prepare_mix(waveform, sample_rate)  # [2, N] float32 at 44.1 kHz, maybe the caller's memory
        # the input's peak scaling is applied chunk by chunk, so the mix is never copied
        gain = _peak_gain(mix, self.settings.peak)
        vocals = self._demix(mix, gain, progress, should_cancel)
        vocals *= np.float32(self.spec.compensate)
        _scale_to_peak(vocals, self.settings.peak)
        # audio-separator scales the stem once more as it writes it; the first result can sit one
        # float32 step above the peak, and then the second pass moves every sample by a step.
        _scale_to_peak(vocals, self.settings.peak)
        return torch.from_numpy(vocals), SEPARATION_SAMPLE_RATE

    def _demix(self, mix: np.ndarray, gain: Optional[np.float32], progress, should_cancel) -> np.ndarray:
        """Chunked model passes over `mix` [2, N] times `gain` -> [2, N] (before compensate),
        holding only the chunk-sized sums of the chunks that overlap the current one.

        Positions are in the padded mixture ``[trim zeros | mix | pad zeros]`` of length L, as in
        audio-separator's MDXSeparator.demix: the padding makes L - trim a whole number of
        `chunk - 2 trim` segments plus one.
        """
        spec, overlap = self.spec, self.settings.overlap
        chunk, trim, n = spec.chunk_size, spec.trim, mix.shape[1]
        segment = chunk - 2 * trim
        pad = segment + trim - n % segment
        total_length = trim + n + pad
        step = int((1 - overlap) * chunk)
        starts = range(0, total_length, step)
        vocals = np.empty((2, n), dtype=np.float32)
        sums = np.zeros((2, chunk), dtype=np.float32)  # window-weighted outputs from `origin` on
        weights = np.zeros((2, chunk), dtype=np.float32)  # the windows summed there
        origin = 0

        def finish(until: int) -> None:
            """Samples [origin, until) of the mixture get no more contributions: store them."""
            lo, hi = max(origin, trim), min(until, trim + n)
            if hi > lo:
                vocals[:, lo - trim:hi - trim] = sums[:, lo - origin:hi - origin] / weights[:, lo - origin:hi - origin]

        for index, start in enumerate(starts):
            if should_cancel is not None and should_cancel():
                raise SeparationCancelled(f"vocal separation cancelled at chunk {index + 1}/{len(starts)}")
            finish(start)
            shift = start - origin
            sums[:, :chunk - shift] = sums[:, shift:].copy()
            weights[:, :chunk - shift] = weights[:, shift:].copy()
            sums[:, chunk - shift:] = 0
            weights[:, chunk - shift:] = 0
            origin = start

            end = min(start + chunk, total_length)
            part = _mixture_slice(mix, trim, start, chunk)
            if gain is not None:
                part *= gain
            output = self._run_chunk(part)
            used = end - start
            if overlap != 0:
                # A symmetric Hann over the samples that exist (np.hanning, float64), as
                # audio-separator weights each chunk; its zero ends lie inside the neighbouring
                # chunk or in the padding, so every kept sample has a positive weight.
                window = np.hanning(used)
                output[:, :used] *= window
                weights[:, :used] += window
            else:
                weights[:, :used] += 1
            sums[:, :used] += output[:, :used]
            if progress is not None:
                progress(index + 1, len(starts))
        finish(total_length)
        return vocals


def _mixture_slice(mix: np.ndarray, trim: int, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of the padded mixture [trim zeros | mix | zeros], [2, length]."""
    part = np.zeros((2, length), dtype=np.float32)
    lo, hi = max(start, trim), min(start + length, trim + mix.shape[1])
    if hi > lo:
        part[:, lo - start:hi - start] = mix[:, lo - trim:hi - trim]
    return part


def prepare_mix(waveform: torch.Tensor, sample_rate: int) -> np.ndarray:
    """A clip as audio-separator loads it: float32 [2, N] at 44.1 kHz (for stereo float32 input at
    44.1 kHz the caller's own memory: do not write to it).

    Mono is duplicated to both sides (audio-separator's prepare_mix); more than two channels are
    averaged to mono first (audio-separator cannot take them; logged). Other rates are resampled
    with soxr HQ to ceil(T * 44100 / rate) samples, what librosa.load(sr=44100) gives.
    """
    from .audio import resample

    if not isinstance(waveform, torch.Tensor):
        waveform = torch.as_tensor(waveform)
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise ValueError(f"separate_vocals: expected a waveform [channels, samples], got shape {tuple(waveform.shape)}")
    if waveform.shape[0] == 0 or waveform.shape[1] == 0:
        raise ValueError(f"separate_vocals: the audio is empty (shape {tuple(waveform.shape)}); give a clip with sound")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"separate_vocals: sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    waveform = waveform.detach().to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(waveform).all():
        raise ValueError("separate_vocals: the audio holds NaN or infinite samples; fix the source clip")
    channels = waveform.shape[0]
    if channels > 2:
        logger.info("separate_vocals: %d channels mixed down to mono, then used on both sides", channels)
        waveform = waveform.mean(dim=0, keepdim=True)
    if waveform.shape[0] == 1:
        waveform = waveform.expand(2, -1)
    return resample(waveform, int(sample_rate), SEPARATION_SAMPLE_RATE).numpy()  # read only


def separate_vocals(waveform: torch.Tensor, sample_rate: int, model_path: Union[str, os.PathLike], *,
                    progress: Optional[ProgressCallback] = None, should_cancel: Optional[Callable[[], bool]] = None,
                    device: Union[str, torch.device] = "cpu", engine: str = "auto",
                    spec: Optional[MDXModelSpec] = None,
                    settings: Optional[SeparationSettings] = None) -> tuple[torch.Tensor, int]:
    """The vocals of a clip, as Hallo's audio-separator run produces them (before its 16-bit wav).

    Args:
        waveform: float [C, T] (or [T]) at `sample_rate`; any channel count.
        sample_rate: Hz.
        model_path: the MDX-Net .onnx file, Kim_Vocal_2.onnx (see :data:`KNOWN_MODELS`).
        progress: called ``progress(done_chunks, total_chunks)`` after each model call
            (one per 0.75 x 5.9 s of audio for Kim_Vocal_2).
        should_cancel: polled before each chunk; True raises :class:`SeparationCancelled`.
        device, engine, spec, settings: see :class:`VocalSeparator`.

    Returns:
        (vocals float32 [2, N] on the CPU, 44100): stereo at 44.1 kHz whatever the input, with
        N = ceil(T * 44100 / sample_rate), peak at most 0.9.
    """
    separator = VocalSeparator(model_path, spec=spec, device=device, engine=engine, settings=settings)
    return separator.separate(waveform, sample_rate, progress=progress, should_cancel=should_cancel)


# --------------------------------------------------------------------------------------------------
# What Hallo does with the vocals
# --------------------------------------------------------------------------------------------------


def to_pcm16_like_audio_separator(vocals: np.ndarray) -> np.ndarray:
    """[2, N] float -> [2, N] int16 as audio-separator writes its wav: x * 32767 truncated toward 0."""
    return (np.asarray(vocals, dtype=np.float32) * 32767).astype(np.int16)


def vocals_as_hallo_reads_them(vocals: torch.Tensor, sample_rate: int = SEPARATION_SAMPLE_RATE) -> torch.Tensor:
    """The 16 kHz mono waveform Hallo gives wav2vec2 after separation, float32 [T16].

    Hallo's steps: audio-separator's 16-bit wav, ``ffmpeg -ar 16000`` (libswresample, here through
    PyAV's resampler), then ``librosa.load(sr=16000)``: int16 / 32768, channels averaged.
    """
    import av

    pcm = to_pcm16_like_audio_separator(torch.as_tensor(vocals).detach().cpu().numpy())
    if pcm.ndim != 2 or pcm.shape[0] not in (1, 2):
        raise ValueError(f"vocals_as_hallo_reads_them: expected [1 or 2, N] vocals, got {tuple(pcm.shape)}")
    layout = "stereo" if pcm.shape[0] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T).reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = int(sample_rate)
    resampler = av.AudioResampler(format="s16", layout=layout, rate=16000)
    pieces = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    interleaved = np.concatenate(pieces, axis=1).reshape(-1, pcm.shape[0])  # [T16, C]
    expected = math.ceil(pcm.shape[1] * 16000 / sample_rate)
    samples = interleaved.T.astype(np.float32) / 32768.0
    return torch.from_numpy(samples.mean(axis=0)[:expected].copy())
