"""Decoding a source video at the dataset's frame rate, for `emo prepare`.

Sources come at any frame rate, constant or variable. Output frame i shows what is on screen at
t_i = t0 + i / fps (t0 = the first frame's time): the last source frame whose presentation time
is <= t_i ("sample and hold"). Frames are never blended: a blend of two mouth shapes is a mouth
shape that was never spoken. The video lasts until the last source frame's time plus one source
frame duration, so a 2.0 s clip at 30 fps gives exactly 50 frames at 25 fps.

`probe` reads only the packet headers (no decoding) to count the output frames; `iter_frames`
decodes and yields exactly that many frames, so two passes over one file always agree.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

logger = logging.getLogger(__name__)

# Presentation times are compared with this slack (seconds): container time bases round.
_TIME_EPS = 1e-6


class UnusableVideo(ValueError):
    """A source video that cannot go into the dataset; `reason` is the short text logged and
    stored in the manifest ("no audio stream", "too short: 0.40 s < 1.00 s", ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoStream:
    """What `probe` learns about a source video. Times in seconds."""

    path: str
    width: int
    height: int
    source_fps: float  # average rate of the source
    start: float  # t0, presentation time of the first frame
    end: float  # last frame's time + one frame duration
    fps: float  # the rate frames are resampled to
    num_frames: int  # frames at `fps` between start and end
    audio_start: float | None  # first audio sample's time; None without an audio stream

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _open(path: Path):
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise UnusableVideo(f"cannot be opened as a video ({type(error).__name__}: {error})") from error


def probe(path, fps: float) -> VideoStream:
    """Read a video's geometry and timing from its packets and count the frames at `fps`.

    Raises UnusableVideo for files FFmpeg cannot read or that hold no video frames.
    """
    path = Path(path)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"probe: fps must be > 0, got {fps!r}")
    with _open(path) as container:
        if not container.streams.video:
            raise UnusableVideo("has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise UnusableVideo("video stream has no frame size")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        base = stream.time_base
        times = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    times.append(float(packet.pts * base))
        except av.FFmpegError as error:
            raise UnusableVideo(f"is corrupt ({type(error).__name__}: {error})") from error
        audio_start = None
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_start = float(audio.start_time * audio.time_base) if audio.start_time is not None else 0.0
    if not times:
        raise UnusableVideo("holds no video frames")
    times.sort()
    source_fps = float(rate) if rate else (len(times) - 1) / max(times[-1] - times[0], _TIME_EPS) or 25.0
    start = times[0]
    end = times[-1] + 1.0 / source_fps
    num_frames = int(math.floor((end - start) * fps + 1e-6))
    return VideoStream(path=str(path), width=width, height=height, source_fps=source_fps, start=start,
                       end=end, fps=float(fps), num_frames=num_frames, audio_start=audio_start)


def output_times(stream: VideoStream) -> np.ndarray:
    """Presentation time (seconds) of every output frame: (num_frames,) float64."""
    return stream.start + np.arange(stream.num_frames, dtype=np.float64) / stream.fps


def iter_frames(stream: VideoStream, *, max_side: int | None = None,
                wanted: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the video and yield (i, frame) for every output frame i, in order.

    frame: uint8 RGB [H, W, 3], at full size or shrunk so that its long side is `max_side`.
    wanted: optional (num_frames,) bool; frames not wanted are skipped (not converted), which
    saves the colour conversion of frames outside every clip.
    Raises UnusableVideo when decoding fails part-way.
    """
    times = output_times(stream)
    total = stream.num_frames
    width, height = stream.width, stream.height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(stream.width * scale)), max(2, round(stream.height * scale))
    size = {} if (width, height) == (stream.width, stream.height) else {"width": width, "height": height}

    def convert(frame) -> np.ndarray:
        return frame.to_ndarray(format="rgb24", **size)

    index = 0
    held = None  # the source frame on screen
    with _open(Path(stream.path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        try:
            for frame in container.decode(video):
                t = frame.time
                if t is None:
                    continue
                # Output frames whose time comes before this frame show the held one.
                while index < total and times[index] < t - _TIME_EPS:
                    source = held if held is not None else frame
                    if wanted is None or wanted[index]:
                        yield index, convert(source)
                    index += 1
                held = frame
                if index >= total:
                    break
        except av.FFmpegError as error:
            raise UnusableVideo(f"decoding failed at frame {index} ({type(error).__name__}: {error})") from error
    if held is None:
        raise UnusableVideo("holds no decodable video frames")
    # Packets that did not decode would otherwise turn into a long frozen tail.
    decoded_end = held.time + 1.0 / stream.source_fps
    if index < total and times[total - 1] > decoded_end + 2.0 / stream.fps:
        raise UnusableVideo(f"decodes only up to {decoded_end - stream.start:.2f} s of "
                            f"{stream.seconds:.2f} s")
    while index < total:  # the rest shows the last frame (its own duration)
        if wanted is None or wanted[index]:
            yield index, convert(held)
        index += 1
