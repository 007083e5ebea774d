"""Writing and probing video files with PyAV (FFmpeg).

`write_video` streams frames chunk by chunk, so a long generation is encoded while it is
decoded from latents and never held twice in memory. Output is atomic: frames go to a hidden
temporary file next to the target, renamed over it only after the container is complete, so
a failure, a cancelled run or Ctrl-C never leaves a half-written video behind.

Frames are float32 [n, H, W, 3] chunks with values 0..1 (or uint8 0..255), ComfyUI's IMAGE
layout. Audio is a waveform [C, T] float in -1..1 with its sample rate in Hz.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import ColorRange, Colorspace

from .runtime.output import atomic_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    """An encoder preset: container, codecs and their options."""

    container: str  # FFmpeg muxer name
    extensions: tuple[str, ...]  # accepted file suffixes; the first is added when a path has none
    video_codec: str
    crf_max: int  # highest (worst) quality value the encoder accepts; 0 is best
    video_options: dict[str, str] = field(default_factory=dict)
    audio_codec: str = ""
    # Sample rate the audio codec is always fed at; None keeps the input rate when the codec
    # supports it.
    audio_rate: int | None = None
    audio_bit_rate: int = 128_000
    audio_options: dict[str, str] = field(default_factory=dict)
    container_options: dict[str, str] = field(default_factory=dict)
    # write_video(deterministic=True): one encoder thread (x264 and libvpx choose their threads
    # from the machine's cores, and the encode, even its header, depends on the count) and no
    # FFmpeg version strings, so the same frames give the same bytes.
    deterministic_video_options: dict[str, str] = field(default_factory=lambda: {"threads": "1", "flags": "+bitexact"})
    # FFmpeg's AAC encoder writes its version into the first frame unless told bitexact.
    deterministic_audio_options: dict[str, str] = field(default_factory=lambda: {"flags": "+bitexact"})
    deterministic_container_options: dict[str, str] = field(default_factory=lambda: {"fflags": "+bitexact"})


VIDEO_FORMATS: dict[str, VideoFormat] = {
    "h264-mp4": VideoFormat(
        container="mp4",
        extensions=(".mp4", ".m4v"),
        video_codec="libx264",
        crf_max=51,
        video_options={"preset": "medium"},
        audio_codec="aac",
        audio_bit_rate=192_000,
        # use_metadata_tags: keep arbitrary metadata keys (e.g. "workflow"), not only the few
        # iTunes atoms; faststart: move the index to the front so browsers play while loading.
        container_options={"movflags": "use_metadata_tags+faststart"},
    ),
    "vp9-webm": VideoFormat(
        container="webm",
        extensions=(".webm",),
        video_codec="libvpx-vp9",
        crf_max=63,
        # "good" + cpu-used 4 is libvpx's usual speed/quality trade-off for offline encodes.
        video_options={"deadline": "good", "cpu-used": "4", "row-mt": "1"},
        audio_codec="libopus",
        audio_rate=48_000,  # Opus runs internally at 48 kHz; other rates are resampled anyway
        audio_bit_rate=128_000,
    ),
}

# Frames are converted to limited-range BT.709 YUV and the streams are tagged so, so players
# convert back with the same matrix instead of guessing (BT.601 vs 709 shifts skin tones).
_BT709 = 1  # AVCOL_SPC/PRI/TRC_BT709
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG (16..235)


def _video_format(name: str) -> VideoFormat:
    if name not in VIDEO_FORMATS:
        raise ValueError(f"write_video: unknown format {name!r}; expected one of {', '.join(VIDEO_FORMATS)}")
    return VIDEO_FORMATS[name]


def format_for_suffix(path) -> str:
    """The format name (a key of VIDEO_FORMATS) whose extensions include the file's suffix."""
    suffix = Path(path).suffix.lower()
    for name, spec in VIDEO_FORMATS.items():
        if suffix in spec.extensions:
            return name
    known = sorted(ext for spec in VIDEO_FORMATS.values() for ext in spec.extensions)
    raise ValueError(f"{Path(path).name!r}: unknown video suffix {suffix!r}; use one of {', '.join(known)}")


def _fps_fraction(fps) -> Fraction:
    """Frame rate as an exact fraction: 25 -> 25/1, 29.97 -> 2997/100, 30000/1001 stays exact."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not (
        math.isfinite(float(fps)) and fps > 0
    ):
        raise ValueError(f"write_video: fps must be a positive number of frames per second, got {fps!r}")
    # A denominator up to 1001 represents the NTSC rates (24000/1001, 30000/1001) exactly while
    # keeping the time base small.
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"write_video: fps {fps!r} is too small; expected at least 1/1001 frames per second")
    return rate


def _output_path(path, spec: VideoFormat, format_name: str) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == "":
        return path.with_name(path.name + spec.extensions[0])
    if suffix not in spec.extensions:
        raise ValueError(
            f"write_video: the file name '{path.name}' ends in '{path.suffix}' but format {format_name!r} writes "
            f"{'/'.join(spec.extensions)} files; change the extension or pick the matching format"
        )
    return path


def _check_metadata(metadata) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"write_video: metadata must be a dict of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ValueError(
                f"write_video: metadata entries must be non-empty string keys with string values, got "
                f"{key!r}: {type(value).__name__}; serialise values first (e.g. json.dumps(workflow))"
            )
    return dict(metadata)


def _check_audio(audio) -> tuple[torch.Tensor, int] | None:
    """Validate (waveform, sample_rate) and return the samples [C, T] (any float type) and the rate."""
    if audio is None:
        return None
    try:
        waveform, sample_rate = audio
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"write_video: audio must be a (waveform [C, T], sample_rate) pair, got {type(audio).__name__}"
        ) from error
    waveform = torch.as_tensor(waveform)
    shape = tuple(waveform.shape)
    if waveform.dim() == 3 and waveform.shape[0] == 1:
        waveform = waveform[0]  # ComfyUI AUDIO carries a batch dimension
    elif waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2 or waveform.shape[0] not in (1, 2):
        raise ValueError(
            f"write_video: audio waveform must be [channels, samples] with 1 or 2 channels, got {shape}; "
            "mix multichannel audio down to stereo first"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"write_video: audio sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if waveform.shape[1] == 0:
        logger.warning("write_video: the audio waveform is empty; writing the video without sound")
        return None
    # Kept as given (no copy of a long clip): each slice is cleaned and converted as it is encoded.
    return waveform.detach(), int(sample_rate)


def _iter_chunks(frames) -> Iterable:
    # A bare tensor is one chunk: iterating it would yield single [H, W, 3] frames.
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        yield frames
    else:
        yield from frames


def _chunk_to_uint8(chunk, index: int) -> np.ndarray:
    """One chunk [n, H, W, 3] (or a single frame [H, W, 3]), float 0..1 or uint8 -> uint8 [n, H, W, 3]."""
    if isinstance(chunk, np.ndarray):
        chunk = torch.from_numpy(chunk)
    if not isinstance(chunk, torch.Tensor):
        raise ValueError(
            f"write_video: chunk {index} is a {type(chunk).__name__}; expected image tensors [n, H, W, 3]"
        )
    if chunk.dim() == 3:
        chunk = chunk[None]
    if chunk.dim() != 4 or chunk.shape[-1] != 3:
        raise ValueError(
            f"write_video: chunk {index} has shape {tuple(chunk.shape)}; "
            "expected frames [n, H, W, 3] (RGB, channels last)"
        )
    chunk = chunk.detach().cpu()
    if chunk.dtype == torch.uint8:
        return np.ascontiguousarray(chunk.numpy())
    if not chunk.is_floating_point():
        raise ValueError(
            f"write_video: chunk {index} has dtype {chunk.dtype}; expected float values 0..1 or uint8 0..255"
        )
    scaled = (torch.nan_to_num(chunk.to(torch.float32)).clamp(0.0, 1.0) * 255.0).round()
    return np.ascontiguousarray(scaled.to(torch.uint8).numpy())


def _pick_sample_rate(codec_name: str, wanted: int) -> int:
    """The input rate when the encoder supports it, else the next supported rate above it."""
    rates = av.codec.Codec(codec_name, "w").audio_rates
    if not rates or wanted in rates:
        return wanted
    higher = [rate for rate in rates if rate >= wanted]
    return min(higher) if higher else max(rates)


def _pick_sample_format(codec_name: str) -> str:
    """Prefer a float sample format so audio is not quantised before the codec does it."""
    formats = [fmt.name for fmt in av.codec.Codec(codec_name, "w").audio_formats or ()]
    for preferred in ("fltp", "flt"):
        if preferred in formats:
            return preferred
    return formats[0] if formats else "fltp"


class _StreamWriter:
    """The open streams of one output file; created when the first chunk tells the frame size."""

    def __init__(self, container, spec: VideoFormat, rate: Fraction, crf: int, height: int, width: int, audio):
        self.container = container
        self.rate = rate
        self.source_size = (height, width)
        # yuv420p stores chroma at half resolution, so both sides must be even.
        self.pad = (height % 2, width % 2)
        if any(self.pad):
            logger.info(
                "write_video: padding %dx%d frames to %dx%d by repeating the last row/column "
                "(yuv420p needs even sizes)",
                width,
                height,
                width + self.pad[1],
                height + self.pad[0],
            )
        self.frame_count = 0

        video = container.add_stream(spec.video_codec, rate=rate, options={**spec.video_options, "crf": str(crf)})
        video.width, video.height = width + self.pad[1], height + self.pad[0]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = 1 / rate
        # Constant-quality mode: for libvpx a bit rate turns crf into a cap ("constrained
        # quality"); libx264 ignores it when crf is set.
        video.codec_context.bit_rate = 0
        context = video.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = _MPEG_RANGE
        self.video = video

        self.audio = None
        if audio is not None:
            samples, sample_rate = audio
            self.samples, self.sample_rate = samples, sample_rate
            self.layout = "mono" if samples.shape[0] == 1 else "stereo"
            out_rate = spec.audio_rate or _pick_sample_rate(spec.audio_codec, sample_rate)
            stream = container.add_stream(spec.audio_codec, rate=out_rate, layout=self.layout,
                                          options=dict(spec.audio_options))
            stream.codec_context.format = _pick_sample_format(spec.audio_codec)
            stream.codec_context.bit_rate = spec.audio_bit_rate
            self.audio = stream
            self.samples_written = 0

        # Opens the encoders and writes the header; the audio frame size is known only after.
        container.start_encoding()
        if self.audio is not None:
            frame_size = self.audio.codec_context.frame_size
            # Fixed-size encoders (AAC 1024, Opus 960) reject other frame sizes; the resampler
            # converts rate/format/layout and re-chunks in one place.
            self.resampler = av.AudioResampler(
                format=self.audio.codec_context.format,
                layout=self.layout,
                rate=self.audio.codec_context.sample_rate,
                frame_size=frame_size or None,
            )
            if out_rate != sample_rate:
                logger.info(
                    "write_video: resampling audio from %d Hz to %d Hz for %s", sample_rate, out_rate, spec.audio_codec
                )

    def write_frames(self, frames: np.ndarray, index: int) -> None:
        """Encode uint8 frames [n, H, W, 3], then the audio that plays during them."""
        if tuple(frames.shape[1:3]) != self.source_size:
            raise ValueError(
                f"write_video: chunk {index} has {frames.shape[2]}x{frames.shape[1]} frames but the video started at "
                f"{self.source_size[1]}x{self.source_size[0]}; resize all frames to one size before writing"
            )
        if any(self.pad):
            frames = np.pad(frames, ((0, 0), (0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        time_base = self.video.codec_context.time_base
        for array in frames:
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
            frame.pts = self.frame_count  # in 1/fps units: one tick per frame
            frame.time_base = time_base
            self.container.mux(self.video.encode(frame))
            self.frame_count += 1
        if self.audio is not None:
            # Keep audio abreast of video so the muxer's interleaving buffer stays small.
            end = min(self.samples.shape[1], math.floor(self.frame_count * self.sample_rate / self.rate))
            self._write_audio(end)

    def _write_audio(self, end: int) -> None:
        if end <= self.samples_written:
            return
        piece = self.samples[:, self.samples_written : end].cpu().to(torch.float32)
        piece = torch.nan_to_num(piece).clamp(-1.0, 1.0).numpy()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout=self.layout)
        frame.sample_rate = self.sample_rate
        # pts counts samples from 0, so the first sample plays with the first video frame.
        frame.pts = self.samples_written
        frame.time_base = Fraction(1, self.sample_rate)
        for resampled in self.resampler.resample(frame):
            self.container.mux(self.audio.encode(resampled))
        self.samples_written = end

    def finish(self) -> None:
        """Flush the encoders. Audio longer than the video is kept, not cut."""
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self._write_audio(self.samples.shape[1])
            for resampled in self.resampler.resample(None):
                self.container.mux(self.audio.encode(resampled))
            self.container.mux(self.audio.encode(None))


def _encode(temp_path: Path, frames, spec: VideoFormat, rate: Fraction, crf: int, audio, metadata,
            deterministic: bool = False) -> int:
    if deterministic:
        spec = replace(spec, video_options={**spec.video_options, **spec.deterministic_video_options},
                       audio_options={**spec.audio_options, **spec.deterministic_audio_options},
                       container_options={**spec.container_options, **spec.deterministic_container_options})
    container = av.open(str(temp_path), "w", format=spec.container, container_options=dict(spec.container_options))
    try:
        for key, value in metadata.items():
            container.metadata[key] = value
        writer = None
        for index, chunk in enumerate(_iter_chunks(frames)):
            array = _chunk_to_uint8(chunk, index)
            if array.shape[0] == 0:
                continue
            if writer is None:
                writer = _StreamWriter(container, spec, rate, crf, array.shape[1], array.shape[2], audio)
            writer.write_frames(array, index)
            # Drop this chunk before the producer builds the next one (e.g. decodes more latents).
            del chunk, array
        if writer is None:
            raise ValueError("write_video: got no frames; pass at least one chunk of frames [n, H, W, 3] with n > 0")
        writer.finish()
    except BaseException:
        # Close without letting a secondary error hide the original one (e.g. a cancellation).
        try:
            container.close()
        except Exception as close_error:  # the original exception is re-raised below
            logger.debug("write_video: closing the abandoned file failed: %s", close_error)
        raise
    container.close()
    return writer.frame_count


def write_video(
    path,
    frames,
    fps: float,
    *,
    audio: tuple[torch.Tensor, int] | None = None,
    format: str = "h264-mp4",
    crf: int = 19,
    metadata: dict[str, str] | None = None,
    deterministic: bool = False,
) -> Path:
    """Encode frames (and optional audio) into a video file, atomically.

    path: output file; a missing extension is added (".mp4" / ".webm"); missing parent
        folders are created; an existing file is replaced.
    frames: an iterable of chunks [n, H, W, 3] float 0..1 or uint8 (a single tensor counts as
        one chunk). Each chunk is encoded and dropped before the next is read. All frames must
        share one size; odd sizes are padded to even by repeating the last row/column.
    fps: frames per second, may be fractional (29.97, 30000/1001 as a Fraction).
    audio: (waveform [C, T] or [1, C, T], sample_rate in Hz), C = 1 or 2, values -1..1. It starts
        with the first frame; it is resampled to what the codec needs and is not cut to the
        video's length.
    format: "h264-mp4" (libx264 yuv420p + AAC) or "vp9-webm" (libvpx-vp9 + Opus).
    crf: constant quality; 0 is best, 51 (h264) / 63 (vp9) worst. 19 is visually transparent
        for h264.
    metadata: container tags, e.g. {"comment": json.dumps(workflow)}.
    deterministic: the same frames and audio give a byte-identical file (one encoder thread,
        no version strings in the container); slower to encode on many cores.

    Returns the path written. On any error, KeyboardInterrupt or an exception raised by
    `frames`, the temporary file is removed and the exception propagates; no file is left.
    """
    spec = _video_format(format)
    rate = _fps_fraction(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= spec.crf_max:
        raise ValueError(
            f"write_video: crf must be an integer 0..{spec.crf_max} for {format}, got {crf!r}; 19 is a good default"
        )
    metadata = _check_metadata(metadata)
    audio = _check_audio(audio)
    path = _output_path(path, spec, format)
    path.parent.mkdir(parents=True, exist_ok=True)

    # The temporary file's dot prefix hides it from file browsers and ComfyUI's output listing
    # while it is being written; its suffix lets FFmpeg pick the container.
    with atomic_output(path, suffix=path.suffix) as temp_path:
        frame_count = _encode(temp_path, frames, spec, rate, crf, audio, metadata, deterministic)
    logger.info("write_video: wrote %s (%d frames at %s fps, %s)", path, frame_count, rate, format)
    return path


def _open_for_reading(path, operation: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{operation}: no video file at '{path}'; check the path")
    try:
        return av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(
            f"{operation}: cannot read '{path}' as a video ({error}); is it a complete video file?"
        ) from error


def probe_video(path) -> dict:
    """Describe a video file by decoding it.

    Returns a dict with: frames (decoded video frames), fps (float), width, height (pixels),
    video_codec, audio_codec (None without audio), audio_seconds (float or None),
    audio_sample_rate (Hz), audio_channels, metadata (container tags; keys lower-cased because
    Matroska/WebM stores tag names in upper case).
    """
    with _open_for_reading(path, "probe_video") as container:
        if not container.streams.video:
            raise ValueError(f"probe_video: '{path}' has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        info = {
            "frames": 0,
            "fps": float(video.average_rate or video.guessed_rate or video.base_rate or 0),
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "video_codec": video.codec_context.name,
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "audio_seconds": None,
            "audio_sample_rate": audio.codec_context.sample_rate if audio is not None else None,
            "audio_channels": audio.codec_context.channels if audio is not None else None,
            "metadata": {key.lower(): value for key, value in container.metadata.items()},
        }
        streams = [video] + ([audio] if audio is not None else [])
        decoded_samples = 0
        for packet in container.demux(streams):
            for frame in packet.decode():
                if packet.stream is video:
                    info["frames"] += 1
                else:
                    decoded_samples += frame.samples
        if audio is not None:
            # The container's duration excludes the encoder's priming and padding samples
            # (MP4 edit lists); decoded samples are the fallback where it is not stored (WebM).
            if audio.duration is not None and audio.time_base is not None:
                info["audio_seconds"] = float(audio.duration * audio.time_base)
            elif info["audio_sample_rate"]:
                info["audio_seconds"] = decoded_samples / info["audio_sample_rate"]
    return info


def read_video_frames(path, max_frames: int | None = None) -> torch.Tensor:
    """Decode the first `max_frames` (default all) frames of a video as float32 [N, H, W, 3], 0..1."""
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames <= 0):
        raise ValueError(f"read_video_frames: max_frames must be a positive integer or None, got {max_frames!r}")
    frames = []
    with _open_for_reading(path, "read_video_frames") as container:
        if not container.streams.video:
            raise ValueError(f"read_video_frames: '{path}' has no video stream")
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"read_video_frames: '{path}' contains no decodable video frames")
    return torch.from_numpy(np.stack(frames)).to(torch.float32) / 255.0
