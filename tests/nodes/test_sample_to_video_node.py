"""EMO Sample To Video: the sampler's frames streamed into the file clip by clip (never all of
them in memory), a few of them kept as the preview, the same video as EMO Sampler + Video Combine."""

from __future__ import annotations

import pytest
import torch

from emo.video import probe_video, read_video_frames
from nodes import sample_to_video as stream_module
from nodes.sample_to_video import EMOSampleToVideo, PreviewFrames
from nodes.speed import EMOSpeedControl
from tests.nodes.test_sampler_node import FRAMES_PER_CLIP, STEPS, run


def stream(inputs, **overrides):
    kwargs = dict(inputs, seed=3, steps=STEPS, cfg=2.0, scheduler="ddim", frames_per_clip=FRAMES_PER_CLIP,
                  motion_frames=2, speed=EMOSpeedControl().make(0.5)[0], filename_prefix="EMO/stream",
                  format="video/h264-mp4", crf=12, save_output=True, preview_frames=4, unique_id="9")
    kwargs.update(overrides)
    return EMOSampleToVideo().sample(**kwargs)


def test_streams_the_same_video_as_the_sampler(inputs, voice, comfy_environment):
    frames = run(inputs)["result"][0]  # EMOSampler: all 15 frames in memory
    out = stream(inputs, audio=voice)
    path, video, preview, fps = out["result"]
    info = probe_video(path)
    assert info["frames"] == 15 and fps == 25.0 and info["audio_seconds"] > 0
    assert path.endswith("stream_00001_.mp4")
    # The preview: 4 evenly spaced frames, exactly the sampler's (same seed, same model).
    assert preview.shape == (4, 64, 64, 3)
    assert torch.equal(preview, frames[[0, 5, 9, 14]])
    # Lossy h264 of the same frames: far closer to them than the frames are to each other.
    error = (read_video_frames(path) - frames).abs().mean()
    assert error < 0.5 * (frames - frames.roll(1, 0)).abs().mean()
    (entry,) = out["ui"]["gifs"]
    assert entry["frame_count"] == 15 and entry["has_audio"]
    assert out["ui"]["emo_readout"][0]["frames"] == 15


def test_never_holds_more_than_one_clip(inputs, monkeypatch, comfy_environment):
    """The writer pulls clip after clip: when a clip reaches the encoder, the earlier ones are
    gone (each chunk is dropped after encoding) - checked by counting live chunks."""
    alive = []
    original = stream_module.start_sampling

    def recording(*args, **kwargs):
        run_ = original(*args, **kwargs)
        clips = run_.clips

        def tracked():
            for chunk in clips():
                alive[:] = [c for c in alive if c() is not None]
                assert len(alive) <= 1, "an earlier clip is still referenced"
                alive.append(__import__("weakref").ref(chunk))
                yield chunk
        run_.clips = tracked
        return run_

    monkeypatch.setattr(stream_module, "start_sampling", recording)
    stream(inputs)
    assert len(alive) >= 1


def test_preview_frames_are_evenly_spaced():
    preview = PreviewFrames(total=10, count=3, size=2)
    for start in range(0, 10, 4):
        chunk = torch.arange(start, min(start + 4, 10)).float().view(-1, 1, 1, 1).expand(-1, 2, 2, 3)
        preview.take(chunk)
    assert preview.frames[:, 0, 0, 0].tolist() == [0.0, 4.0, 9.0]
    assert PreviewFrames(total=2, count=16, size=2).frames.shape[0] == 2


def test_bad_video_settings_fail_before_sampling(inputs, monkeypatch, comfy_environment):
    monkeypatch.setattr(stream_module.EMOSampleToVideo, "sample", EMOSampleToVideo.sample)
    with pytest.raises(ValueError, match="EMO Sample To Video: crf 70 is outside 0..51"):
        stream(inputs, crf=70)
