"""Tests for emo.video: encoding with audio, streaming, padding, atomic output, probing."""

import math
import re
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from emo.video import probe_video, read_video_frames, write_video

FPS = 25
SAMPLE_RATE = 44100
AAC_FRAME_SECONDS = 1024 / SAMPLE_RATE


def _frames(count, height=48, width=64, seed=0):
    """Smooth frames [count, H, W, 3] whose brightness rises with the frame index (codecs keep
    smooth content close to the input, unlike noise)."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None, None]
    xs = torch.linspace(0, 1, width)[None, :, None]
    base = 0.3 * ys + 0.2 * xs + 0.1 * torch.rand(1, 1, 3, generator=generator)
    level = torch.linspace(0, 0.4, count)[:, None, None, None]
    return (base[None] + level).clamp(0, 1).expand(count, height, width, 3).contiguous()


def _stereo_tone(seconds, sample_rate=SAMPLE_RATE, onset=0.0):
    """Stereo sine waveform [2, T] (440 Hz left, 660 Hz right), silent before `onset` seconds."""
    t = torch.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 660 * t)]) * 0.5
    wave[:, t < onset] = 0
    return wave


def _dir_is_empty(folder):
    return list(folder.iterdir()) == []


def test_mp4_with_audio_round_trip(tmp_path):
    frames = _frames(30)
    out = write_video(tmp_path / "clip.mp4", frames, FPS, audio=(_stereo_tone(1.2), SAMPLE_RATE))
    assert out == tmp_path / "clip.mp4" and out.is_file()
    info = probe_video(out)
    assert info["frames"] == 30
    assert info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (64, 48)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_sample_rate"] == SAMPLE_RATE and info["audio_channels"] == 2
    assert info["audio_seconds"] == pytest.approx(1.2, abs=AAC_FRAME_SECONDS)
    decoded = read_video_frames(out)
    assert decoded.shape == (30, 48, 64, 3) and decoded.dtype == torch.float32
    assert (decoded - frames).abs().mean() < 0.02
    assert read_video_frames(out, max_frames=4).shape[0] == 4


def test_audio_starts_with_the_first_frame(tmp_path):
    # Silence for 0.4 s, then a tone: the decoded onset must be at 0.4 s on the video clock.
    out = write_video(tmp_path / "sync.mp4", _frames(25), FPS, audio=(_stereo_tone(1.0, onset=0.4), SAMPLE_RATE))
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        onset = None
        for frame in container.decode(stream):
            samples = frame.to_ndarray()  # (channels, n) planar float
            loud = np.nonzero(np.abs(samples).max(axis=0) > 0.1)[0]
            if loud.size:
                onset = float(frame.pts * stream.time_base) + loud[0] / frame.sample_rate
                break
    assert onset == pytest.approx(0.4, abs=0.01)


def test_webm_vp9_opus(tmp_path):
    out = write_video(
        tmp_path / "clip.webm", _frames(30), FPS, audio=(_stereo_tone(1.2), SAMPLE_RATE), format="vp9-webm", crf=30
    )
    info = probe_video(out)
    assert (info["video_codec"], info["audio_codec"]) == ("vp9", "opus")
    assert info["frames"] == 30 and info["fps"] == pytest.approx(25.0)
    assert info["audio_sample_rate"] == 48000  # resampled for Opus
    assert info["audio_seconds"] == pytest.approx(1.2, abs=0.03)


def test_mono_audio_and_comfy_batch_layout(tmp_path):
    mono = _stereo_tone(0.5)[:1][None]  # [1, 1, T], ComfyUI AUDIO's waveform
    info = probe_video(write_video(tmp_path / "mono.mp4", _frames(10), FPS, audio=(mono, 22050)))
    assert info["audio_channels"] == 1 and info["audio_sample_rate"] == 22050
    assert info["audio_seconds"] == pytest.approx(1.0, abs=2048 / 22050)  # 0.5 s of samples read at half the rate


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    frames = _frames(5, height=47, width=63)
    out = write_video(tmp_path / "odd.mp4", frames, FPS, crf=0)
    info = probe_video(out)
    assert (info["width"], info["height"]) == (64, 48)
    decoded = read_video_frames(out)
    assert (decoded[:, :47, :63] - frames).abs().mean() < 0.02
    assert (decoded[:, :, 63] - decoded[:, :, 62]).abs().max() < 0.03  # repeated last column
    assert (decoded[:, 47] - decoded[:, 46]).abs().max() < 0.03  # repeated last row


def test_chunks_are_streamed_in_order(tmp_path):
    frames = _frames(20)
    consumed = []

    def chunks():
        for start, stop in ((0, 7), (7, 7), (7, 19)):  # includes an empty chunk
            consumed.append(stop)
            yield frames[start:stop]
        yield frames[19]  # a single [H, W, 3] frame
        consumed.append(20)

    out = write_video(tmp_path / "stream.mp4", chunks(), FPS)
    assert consumed == [7, 7, 19, 20]
    decoded = read_video_frames(out)
    assert decoded.shape[0] == 20
    brightness = decoded.mean(dim=(1, 2, 3))
    assert torch.all(brightness[1:] > brightness[:-1])  # order kept
    assert (decoded - frames).abs().mean() < 0.02


def test_uint8_frames_and_fractional_fps(tmp_path):
    frames = (_frames(6) * 255).round().to(torch.uint8)
    info = probe_video(write_video(tmp_path / "ntsc.mp4", frames, Fraction(30000, 1001)))
    assert info["frames"] == 6 and info["fps"] == pytest.approx(30000 / 1001, rel=1e-6)


class Cancelled(Exception):
    """Stands in for a host's interruption exception."""


@pytest.mark.parametrize("error", [Cancelled, KeyboardInterrupt])
def test_failure_midway_leaves_no_file(tmp_path, error):
    def chunks():
        yield _frames(4)
        yield _frames(4)
        raise error("stop")

    with pytest.raises(error):
        write_video(tmp_path / "cancelled.mp4", chunks(), FPS, audio=(_stereo_tone(1.0), SAMPLE_RATE))
    assert _dir_is_empty(tmp_path)


def test_failure_keeps_an_existing_file(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous render")

    def chunks():
        yield _frames(2)
        raise Cancelled

    with pytest.raises(Cancelled):
        write_video(target, chunks(), FPS)
    assert target.read_bytes() == b"previous render"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


@pytest.mark.parametrize("fmt, name", [("h264-mp4", "meta.mp4"), ("vp9-webm", "meta.webm")])
def test_metadata_round_trip(tmp_path, fmt, name):
    workflow = '{"nodes": [{"id": 1, "type": "EMOSampler"}]}'
    out = write_video(tmp_path / name, _frames(3), FPS, format=fmt, metadata={"comment": workflow, "title": "emo"})
    metadata = probe_video(out)["metadata"]
    assert metadata["comment"] == workflow and metadata["title"] == "emo"


def test_zero_frames_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", iter([]), FPS)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", torch.zeros(0, 8, 8, 3), FPS)
    assert _dir_is_empty(tmp_path)


def test_mismatched_chunk_sizes_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="chunk 1 has 32x24 frames but the video started at 64x48"):
        write_video(tmp_path / "mixed.mp4", [_frames(2), _frames(2, 24, 32)], FPS)
    assert _dir_is_empty(tmp_path)


def test_missing_extension_is_added(tmp_path):
    assert write_video(tmp_path / "noext", _frames(2), FPS, format="vp9-webm") == tmp_path / "noext.webm"


def test_argument_errors(tmp_path):
    frames = _frames(2)
    with pytest.raises(ValueError, match="h264-mp4, vp9-webm"):
        write_video(tmp_path / "a.mp4", frames, FPS, format="prores")
    with pytest.raises(ValueError, match="ends in '.webm'"):
        write_video(tmp_path / "a.webm", frames, FPS)
    with pytest.raises(ValueError, match="crf"):
        write_video(tmp_path / "a.mp4", frames, FPS, crf=60)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", frames, 0)
    with pytest.raises(ValueError, match="channels"):
        write_video(tmp_path / "a.mp4", frames, FPS, audio=(torch.zeros(6, 100), SAMPLE_RATE))
    with pytest.raises(ValueError, match="json.dumps"):
        write_video(tmp_path / "a.mp4", frames, FPS, metadata={"workflow": {"nodes": []}})
    with pytest.raises(ValueError, match=r"\[n, H, W, 3\]"):
        write_video(tmp_path / "a.mp4", torch.zeros(2, 3, 8, 8), FPS)
    assert _dir_is_empty(tmp_path)


def test_probe_and_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="cannot read"):
        read_video_frames(tmp_path / "junk.mp4")


@pytest.mark.parametrize("name, fmt", [("clip.mp4", "h264-mp4"), ("clip.webm", "vp9-webm")])
def test_deterministic_files_are_byte_identical(tmp_path, name, fmt):
    """deterministic=True: one encoder thread and no version strings, so the same frames and
    audio give the same bytes (x264 picks its thread count from the cores, and the count shapes
    the encode and is written into the stream's header)."""
    frames, audio = _frames(40, 64, 64), (_stereo_tone(1.6), SAMPLE_RATE)
    first, second = (write_video(tmp_path / folder / name, frames, FPS, audio=audio, format=fmt,
                                 deterministic=True)
                     for folder in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    version = re.compile(rb"Lav[fc]\d+\.\d+")  # FFmpeg's library versions, as muxers write them
    assert not version.search(first.read_bytes())
    if name.endswith(".mp4"):
        assert b"threads=1 " in first.read_bytes()  # x264's settings, as written into the stream
    default = write_video(tmp_path / "c" / name, frames, FPS, audio=audio, format=fmt)
    assert version.search(default.read_bytes())
    assert (read_video_frames(first) - read_video_frames(default)).abs().mean() < 0.01
