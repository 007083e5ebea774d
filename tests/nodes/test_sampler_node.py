"""EMOSampler on the tiny model: frames and fps, progress across clips, previews, interruption
within one step, determinism, face-mask alignment, and input errors."""

from __future__ import annotations

import pytest
import torch

from emo.audio import AudioFeatures
from nodes import comfy_services as services
from nodes.reference import EMOReference
from nodes.sampler import SD15_LATENT_RGB, EMOSampler, align_mask, latent_preview
from nodes.speed import EMOSpeedControl

STEPS = 2
FRAMES_PER_CLIP = 6
LATENT_SIZE = (8, 8)  # a per-step preview of a 64 px clip


def run(inputs, **overrides):
    kwargs = dict(inputs, seed=3, steps=STEPS, cfg=2.0, scheduler="ddim", frames_per_clip=FRAMES_PER_CLIP,
                  motion_frames=2, speed=EMOSpeedControl().make(0.5)[0], unique_id="9")
    kwargs.update(overrides)
    return EMOSampler().sample(**kwargs)


@pytest.fixture
def progress_bars(monkeypatch):
    bars = []
    original = services.Progress

    class Recording(original):
        def __init__(self, total):
            super().__init__(total)
            self.history = []
            bars.append(self)

        def update_absolute(self, value, total=None, preview_image=None):
            super().update_absolute(value, total, preview_image)
            self.history.append((value, preview_image.size if preview_image is not None else None))

    monkeypatch.setattr(services, "Progress", Recording)
    return bars


def test_frames_fps_readout_and_progress(inputs, progress_bars):
    out = run(inputs)
    frames, fps = out["result"]
    assert frames.shape == (15, 64, 64, 3) and frames.dtype == torch.float32
    assert 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0
    assert fps == 25.0
    assert out["ui"]["emo_readout"] == [{"frames": 15, "fps": 25.0, "seconds": 0.6, "clips": 3}]
    (bar,) = progress_bars
    assert bar.total == 3 * STEPS  # one bar across all clips
    # Every step: a latent preview (64 px / 8 = 8 px) of the clip being denoised...
    assert [value for value, size in bar.history if size == LATENT_SIZE] == list(range(1, 3 * STEPS + 1))
    # ...and every finished clip: its last decoded frame.
    assert [value for value, size in bar.history if size == (64, 64)] == [STEPS, 2 * STEPS, 3 * STEPS]
    assert len(bar.history) == 3 * STEPS + 3 and bar.current == bar.total


def test_no_step_previews_with_comfyui_preview_method_none(inputs, progress_bars, monkeypatch):
    monkeypatch.setattr(services, "latent_previews_enabled", lambda: False)
    run(inputs, steps=1)
    (bar,) = progress_bars
    assert bar.history == [(1, None), (1, (64, 64)), (2, None), (2, (64, 64)), (3, None), (3, (64, 64))]


def test_latent_preview_projects_the_middle_frame():
    latents = torch.zeros(1, 4, 3, 2, 2)  # (1, 4, f, h, w)
    latents[0, 0, 1] = 1.0  # only the middle frame has channel 0 set
    image = latent_preview(latents)
    assert image.size == (2, 2)
    # ComfyUI's SD1.5 factors: channel 0 -> (0.3512, 0.2297, 0.3227), mapped from -1..1 to 0..255.
    expected = tuple(round((1 + f) / 2 * 255) for f in SD15_LATENT_RGB[0])
    assert image.getpixel((0, 0)) == expected == (172, 157, 169)
    latents[0, :, 1] = 0.0
    assert image.getpixel((1, 1)) != latent_preview(latents).getpixel((1, 1)) == (128, 128, 128)
    assert latent_preview(torch.zeros(1, 16, 3, 2, 2)) is None  # not an SD latent space


def test_same_seed_same_video_other_seed_other_video(inputs):
    first = run(inputs)["result"][0]
    assert torch.equal(first, run(inputs)["result"][0])
    assert not torch.equal(first, run(inputs, seed=4)["result"][0])


def test_speed_and_mask_are_optional(inputs, caplog):
    # Without speed the checkpoint default is used; without a mask the face is detected, which
    # fails on a random image and says what to connect.
    frames = run(inputs, speed=None)["result"][0]
    assert frames.shape[0] == 15
    with pytest.raises(ValueError, match="EMO Sampler: no face found in the reference.*connect EMO Face Region Mask"):
        run(inputs, face_mask=None)
    with caplog.at_level("WARNING"):
        run(inputs, speed=EMOSpeedControl().make(2.5)[0], steps=1)
    assert "outside the range this checkpoint knows" in caplog.text


def test_interruption_stops_within_one_step(inputs, monkeypatch):
    steps_run = []
    original = services.Progress.update_absolute

    def update(self, value, total=None, preview_image=None):
        original(self, value, total, preview_image)
        if preview_image.size == LATENT_SIZE:  # a step, not a finished clip
            steps_run.append(value)
            if value == STEPS + 1:  # first step of the second clip: the user presses Cancel
                services.request_interrupt()

    monkeypatch.setattr(services.Progress, "update_absolute", update)
    with pytest.raises(services.Interrupted):
        run(inputs)
    assert steps_run == [1, 2, 3]  # the next step never started


def test_face_mask_alignment():
    reference = EMOReference(image=torch.zeros(64, 64, 3),
                             info={"box": (40, 0, 120, 80), "source_height": 80, "source_width": 160})
    source_mask = torch.zeros(1, 80, 160)
    source_mask[:, 20:60, 60:100] = 1  # the face, in the source image's pixels
    aligned = align_mask(source_mask, reference)
    assert aligned.shape == (64, 64)
    expected = torch.zeros(64, 64)
    expected[16:48, 16:48] = 1  # cropped with the reference's box, scaled 80 -> 64
    assert torch.equal(aligned, expected)
    assert align_mask(torch.ones(1, 32, 32), reference).shape == (32, 32)  # square: resized later
    with pytest.raises(ValueError, match="EMO Sampler: the face_mask is 100x50 but the reference is 64x64 "
                                         r"\(cropped from a 160x80 image\)"):
        align_mask(torch.ones(1, 50, 100), reference)


def test_input_errors(inputs):
    with pytest.raises(ValueError, match="EMO Sampler: the reference input must come from EMO Load Reference, got Tensor"):
        run(inputs, reference=torch.zeros(64, 64, 3))
    with pytest.raises(ValueError, match="EMO Sampler: unknown scheduler 'karras'"):
        run(inputs, scheduler="karras")
    with pytest.raises(ValueError, match="EMO Sampler: the speed input must come from EMO Speed Control"):
        run(inputs, speed=0.5)
    odd = EMOReference(image=torch.zeros(40, 40, 3), info={})
    with pytest.raises(ValueError, match="EMO Sampler: EMOPipeline: size 40 must be a multiple of"):
        run(inputs, reference=odd, face_mask=torch.ones(1, 40, 40))
    wrong_fps = AudioFeatures(features=inputs["audio_features"].features, fps=0.0,
                              waveform=torch.zeros(1, 10), sample_rate=16000)
    with pytest.raises(ValueError, match="EMO Sampler: EMOPipeline settings: fps must be > 0"):
        run(inputs, audio_features=wrong_fps)


def test_hallo_region_weights_reach_the_pipeline(inputs, monkeypatch):
    import emo.pipeline

    seen = []
    original = emo.pipeline.EMOPipeline.iter_clips

    def spy(self, *args, **kwargs):
        seen.append(kwargs["settings"].region_scales)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(emo.pipeline.EMOPipeline, "iter_clips", spy)
    run(inputs, pose_weight=0.5, face_weight=1.0, lip_weight=2.0)
    assert seen == [(0.5, 1.0, 2.0)]
