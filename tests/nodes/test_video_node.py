"""EMO Video Combine: the file decoded back (frames, fps, audio), metadata, folders, numbering,
streaming without a second copy, cancellation without a partial file, and input errors."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch

from emo.video import probe_video, read_video_frames
from nodes import comfy_services as services
from nodes import video as video_node
from nodes.video import EMOVideoCombine
from tests.helpers import sine

AAC_FRAME = 1024 / 22050  # AAC pads to whole frames of 1024 samples


def frames(count: int, size: int = 32) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, count)[:, None, None, None]
    ys = torch.linspace(0, 1, size)[None, :, None, None]
    return (0.5 * ramp + 0.3 * ys).expand(count, size, size, 3).contiguous()


def combine(images, audio=None, **overrides):
    kwargs = dict(images=images, frame_rate=25.0, filename_prefix="EMO/test", format="video/h264-mp4", crf=19,
                  save_output=True, audio=audio, prompt={"1": {"class_type": "EMOSampler", "inputs": {}}},
                  extra_pnginfo={"workflow": {"nodes": [], "links": []}}, unique_id="11")
    kwargs.update(overrides)
    return EMOVideoCombine().combine(**kwargs)


def test_mp4_with_sound_round_trip(comfy_environment):
    audio = {"waveform": sine(1.0, 22050, channels=2)[None], "sample_rate": 22050}
    out = combine(frames(25), audio)
    path, video = out["result"]
    path = Path(path)
    assert path == comfy_environment / "output" / "EMO" / "test_00001_.mp4" and path.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # a normal file, not mkstemp's 0600
    assert video is None  # no core VIDEO type outside ComfyUI
    info = probe_video(path)
    assert info["frames"] == 25 and info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (32, 32)
    assert info["audio_codec"] == "aac" and info["audio_channels"] == 2
    assert info["audio_seconds"] == pytest.approx(1.0, abs=AAC_FRAME)
    assert (read_video_frames(path) - frames(25)).abs().mean() < 0.03
    # The workflow travels with the file, as core SaveVideo stores it.
    assert json.loads(info["metadata"]["workflow"]) == {"nodes": [], "links": []}
    assert json.loads(info["metadata"]["prompt"])["1"]["class_type"] == "EMOSampler"
    (entry,) = out["ui"]["gifs"]
    assert entry == {"filename": "test_00001_.mp4", "subfolder": "EMO", "type": "output",
                     "format": "video/h264-mp4", "frame_rate": 25.0, "frame_count": 25, "has_audio": True,
                     "fullpath": str(path)}


def test_webm_to_temp_and_numbering(comfy_environment):
    first = Path(combine(frames(5), format="video/webm", crf=40, save_output=False)["result"][0])
    second = Path(combine(frames(5), format="video/webm", crf=40, save_output=False)["result"][0])
    assert first.parent == comfy_environment / "temp" / "EMO"
    assert (first.name, second.name) == ("test_00001_.webm", "test_00002_.webm")  # ComfyUI's counter form
    info = probe_video(second)
    assert info["video_codec"] == "vp9" and info["audio_codec"] is None and info["frames"] == 5


def test_fractional_rate_and_mono_audio_of_another_rate(comfy_environment):
    audio = {"waveform": sine(2.0, 16000)[None], "sample_rate": 16000}
    path = combine(frames(60), audio, frame_rate=29.97)["result"][0]
    info = probe_video(path)
    assert info["frames"] == 60 and info["fps"] == pytest.approx(29.97, abs=0.01)
    assert info["audio_channels"] == 1 and info["audio_seconds"] == pytest.approx(2.0, abs=0.07)


def test_frames_are_streamed_as_views(monkeypatch):
    """The encoder gets chunks that share the IMAGE tensor's memory (no second full copy)."""
    images = frames(40)
    seen = []

    def fake_write_video(path, chunks, fps, **kwargs):
        for chunk in chunks:
            assert chunk.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
            seen.append(chunk.shape[0])
        return path

    monkeypatch.setattr(video_node, "write_video", fake_write_video)
    combine(images)
    assert seen == [16, 16, 8]


def test_cancel_while_encoding_leaves_no_file(comfy_environment, monkeypatch):
    calls = {"n": 0}
    original = services.check_interrupted

    def cancel_on_second_chunk():
        calls["n"] += 1
        if calls["n"] == 2:
            services.request_interrupt()
        original()

    monkeypatch.setattr(services, "check_interrupted", cancel_on_second_chunk)
    with pytest.raises(services.Interrupted):
        combine(frames(40))
    folder = comfy_environment / "output" / "EMO"
    assert list(folder.iterdir()) == []  # not even the hidden partial file


def test_metadata_can_be_disabled(monkeypatch):
    monkeypatch.setattr(services, "metadata_disabled", lambda: True)
    info = probe_video(combine(frames(3))["result"][0])
    assert "workflow" not in info["metadata"] and "prompt" not in info["metadata"]


def test_many_channels_are_mixed_down(caplog):
    audio = {"waveform": sine(0.5, 22050, channels=6)[None], "sample_rate": 22050}
    with caplog.at_level("WARNING"):
        path = combine(frames(12), audio)["result"][0]
    assert probe_video(path)["audio_channels"] == 1 and "6 channels" in caplog.text


def test_input_errors():
    with pytest.raises(ValueError, match="EMO Video Combine: crf 60 is outside 0..51, the range of video/h264-mp4"):
        combine(frames(3), crf=60)
    with pytest.raises(ValueError, match="EMO Video Combine: got no frames"):
        combine(torch.zeros(0, 8, 8, 3))
    with pytest.raises(ValueError, match=r"EMO Video Combine: expected IMAGE frames \[N, H, W, 3\], got \(8, 8, 3\)"):
        combine(torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="EMO Video Combine: unknown format 'video/gif'"):
        combine(frames(3), format="video/gif")
    with pytest.raises(ValueError, match="EMO Video Combine: filename_prefix '../../x' points outside the output folder"):
        combine(frames(3), filename_prefix="../../x")
    with pytest.raises(ValueError, match="EMO Video Combine: expected an AUDIO input"):
        combine(frames(3), audio=torch.zeros(1, 2, 100))
    assert math.isclose(EMOVideoCombine.INPUT_TYPES()["required"]["frame_rate"][1]["default"], 25.0)
