"""EMOPipeline on the tiny model: frame counts, determinism, chaining, progress, cancellation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from emo.audio import AudioFeatures
from emo.pipeline import (
    EMOPipeline,
    GenerationCancelled,
    GenerationSettings,
    SpeedCurve,
    num_clips,
    speed_track,
)
from tests.helpers import box_mask, portrait, sine

SETTINGS = GenerationSettings(size=64, steps=2, frames_per_clip=4, motion_frames=2, seed=7)


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return EMOPipeline(tiny_model)


def features(num_frames: int, seed: int = 0, fps: float = 25.0, model=None) -> AudioFeatures:
    g = torch.Generator().manual_seed(seed)
    return AudioFeatures(features=torch.randn(num_frames, 2, 32, generator=g), fps=fps,
                         waveform=torch.zeros(1, int(num_frames * 640)), sample_rate=16000)


def run(pipe, audio, **kwargs):
    kwargs.setdefault("settings", SETTINGS)
    kwargs.setdefault("face_mask", box_mask(64))
    return pipe(portrait(64), audio, **kwargs)


def test_exact_frame_count_for_odd_duration(pipe):
    audio = pipe.encode_audio(sine(2.3, 22050, channels=2), 22050, fps=25)
    assert audio.num_frames == 58
    result = run(pipe, audio, settings=GenerationSettings(size=64, steps=1, frames_per_clip=12, motion_frames=4))
    assert result.frames.shape == (58, 64, 64, 3)
    assert result.num_clips == 5
    assert result.frames.min() >= 0 and result.frames.max() <= 1
    assert result.sample_rate == 22050 and result.audio_waveform.shape == (2, round(2.3 * 22050))


def test_seed_determinism_bit_for_bit(pipe):
    audio = features(6)
    a, b = run(pipe, audio).frames, run(pipe, audio).frames
    assert torch.equal(a, b)
    c = run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, "seed": 8})).frames
    assert not torch.equal(a, c)


@pytest.mark.parametrize("change", ["reference", "audio", "mask", "speed"])
def test_each_condition_changes_the_video(pipe, change):
    audio = features(4)
    base = run(pipe, audio).frames
    kwargs = {
        "reference": {},
        "audio": {},
        "mask": {"face_mask": box_mask(64, 0.1, 0.5)},
        "speed": {"speed": 1.3},
    }[change]
    if change == "reference":
        other = pipe(portrait(64, seed=5), audio, settings=SETTINGS, face_mask=box_mask(64)).frames
    elif change == "audio":
        other = run(pipe, features(4, seed=1)).frames
    else:
        other = run(pipe, audio, **kwargs).frames
    # Runs are bit-for-bit deterministic, so any difference comes from the changed input.
    assert (base - other).abs().max() > 1e-6


def test_clips_are_chained_through_motion_frames(pipe):
    """Clip 2 must depend on clip 1 through the motion frames: change only the audio of the
    first frames (outside clip 2's audio windows) and clip 2 changes - unless n = 0."""
    a = features(8)
    b = AudioFeatures(features=a.features.clone(), fps=a.fps, waveform=a.waveform, sample_rate=a.sample_rate)
    b.features[:1] += 3.0  # frame 0 only; clip 2 (frames 4..7) windows reach back to frame 2
    for motion_frames, expect_change in ((2, True), (0, False)):
        settings = GenerationSettings(**{**SETTINGS.__dict__, "motion_frames": motion_frames})
        first, second = run(pipe, a, settings=settings).frames, run(pipe, b, settings=settings).frames
        assert (first[:4] - second[:4]).abs().max() > 1e-4
        assert ((first[4:] - second[4:]).abs().max() > 1e-4) == expect_change


@pytest.mark.parametrize("frames_per_clip, motion_frames", [(2, 4), (3, 7)])
def test_more_motion_frames_than_a_clip_has(pipe, monkeypatch, frames_per_clip, motion_frames):
    """n > f: each clip adds its f frames to the motion frames, which keep the last n of all
    frames so far (the first clip's zeros fill the rest), instead of failing on a slice."""
    encoded = record_encodes(pipe, monkeypatch)
    settings = GenerationSettings(**{**SETTINGS.__dict__, "frames_per_clip": frames_per_clip,
                                     "motion_frames": motion_frames})
    chunks = list(pipe.iter_clips(portrait(64), features(7), face_mask=box_mask(64), settings=settings))
    assert sum(len(chunk) for chunk in chunks) == 7
    clips = len(chunks)
    assert [tuple(p.shape) for p in encoded] == [(1, 3, 64, 64)] + [(frames_per_clip, 3, 64, 64)] * (clips - 1)


def record_encodes(pipe, monkeypatch) -> list[torch.Tensor]:
    """Record the pixels of every `encode_reference` call (the reference and motion frames)."""
    encoded = []
    original = pipe.encode_reference

    def recording(pixels):
        encoded.append(pixels.clone())
        return original(pixels)

    monkeypatch.setattr(pipe, "encode_reference", recording)
    return encoded


def test_motion_frames_are_encodings_of_the_previous_clips_pixels(pipe, monkeypatch):
    """As in the paper and Hallo, the next clip's motion frames are the VAE latents of the last n
    decoded frames; `motion_from_pixels=False` passes the sampler's latents on instead."""
    encoded = record_encodes(pipe, monkeypatch)
    settings = GenerationSettings(**{**SETTINGS.__dict__, "motion_frames": 2})
    chunks = list(pipe.iter_clips(portrait(64), features(10), face_mask=box_mask(64), settings=settings))
    assert [tuple(p.shape) for p in encoded] == [(1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64)]
    for clip, pixels in enumerate(encoded[1:]):  # the last 2 frames of clips 1 and 2, as returned
        assert torch.equal(pixels, chunks[clip][-2:].permute(0, 3, 1, 2))
    encoded.clear()
    latent = run(pipe, features(10), settings=GenerationSettings(**{**settings.__dict__,
                                                                    "motion_from_pixels": False})).frames
    assert len(encoded) == 1  # the reference only
    pixels = torch.cat(chunks)
    assert torch.equal(latent[:4], pixels[:4]) and (latent[4:] - pixels[4:]).abs().max() > 1e-4


def test_motion_images_continue_given_frames(pipe, monkeypatch):
    """Given frames before the audio, the first clip's motion frames are their last n, encoded as
    a later clip's are; the result then differs from starting with zeros, and bad frames are
    refused with a clear error."""
    audio = features(4)
    given = torch.stack([portrait(64, seed=s) for s in (3, 4, 5)])  # (3, 64, 64, 3)
    encoded = record_encodes(pipe, monkeypatch)
    continued = run(pipe, audio, motion_images=given).frames
    assert [tuple(p.shape) for p in encoded] == [(1, 3, 64, 64), (2, 3, 64, 64)]
    assert torch.equal(encoded[1], given[-2:].permute(0, 3, 1, 2))
    monkeypatch.undo()
    assert (continued - run(pipe, audio).frames).abs().max() > 1e-4
    # Fewer frames than n: the missing motion frames keep the default (zeros), the given one last.
    one = run(pipe, audio, motion_images=given[-1:]).frames
    assert (one - continued).abs().max() > 1e-6
    with pytest.raises(ValueError, match="motion_images is 48x64; it must be square"):
        run(pipe, audio, motion_images=torch.rand(2, 64, 48, 3))
    with pytest.raises(ValueError, match=r"motion_images must be \(H, W, 3\) RGB"):
        run(pipe, audio, motion_images=torch.rand(64, 64, 3))


def test_iter_clips_streams_clip_by_clip(pipe):
    chunks = list(pipe.iter_clips(portrait(64), features(10), face_mask=box_mask(64), settings=SETTINGS))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]


def test_progress_reports_every_step_of_every_clip(pipe):
    seen = []
    run(pipe, features(9), callback=seen.append)
    assert [(p.clip, p.step) for p in seen] == [(c, s) for c in range(3) for s in (1, 2)]
    assert seen[-1].fraction == 1.0


def test_cancel_stops_within_one_step(pipe):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(GenerationCancelled, match="clip 2/3, step 2/2"):
        run(pipe, features(9), should_cancel=should_cancel)
    assert len(calls) == 4


def test_no_guidance_and_other_scheduler_run(pipe):
    for scheduler in ("dpmpp_2m", "euler"):
        settings = GenerationSettings(**{**SETTINGS.__dict__, "guidance_scale": 1.0, "scheduler": scheduler})
        assert run(pipe, features(3), settings=settings).frames.shape == (3, 64, 64, 3)


def test_decode_chunking_does_not_change_frames(pipe):
    latents = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pipe.decode(latents, 1), pipe.decode(latents, 8), atol=1e-5)


def test_speed_curve_and_track():
    curve = SpeedCurve([(1.0, 1.0), (0.0, 0.0)])
    assert torch.allclose(curve.sample(6, fps=2.0), torch.tensor([0.0, 0.5, 1.0, 1.0, 1.0, 1.0]))
    assert speed_track(0.7, 3).tolist() == pytest.approx([0.7] * 3)
    with pytest.raises(ValueError, match="one value per frame"):
        speed_track([0.1, 0.2], 3)


def test_num_clips():
    assert [num_clips(n, 12) for n in (1, 12, 13, 58)] == [1, 1, 2, 5]


def test_bad_inputs_raise_clear_errors(pipe):
    audio = features(4)
    with pytest.raises(ValueError, match="must be square"):
        pipe(torch.rand(64, 48, 3), audio, settings=SETTINGS, face_mask=box_mask(64))
    with pytest.raises(ValueError, match="encoded at 25.0 fps"):
        run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, "fps": 30.0}))
    with pytest.raises(ValueError, match="multiple of 8"):
        run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, "size": 68}))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, "steps": 0}))
    with pytest.raises(ValueError, match="unknown scheduler"):
        run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, "scheduler": "magic"}))


def test_face_detection_when_no_mask_given(pipe):
    from emo.faces.boxes import FaceNotFoundError

    with pytest.raises(FaceNotFoundError, match="mask"):
        pipe(torch.full((64, 64, 3), 0.5), features(2), settings=SETTINGS)


def test_bf16_runs_on_cpu(tiny_model):
    import copy

    pipe = EMOPipeline(copy.deepcopy(tiny_model), dtype="bf16")
    frames = run(pipe, features(2)).frames
    assert frames.dtype == torch.float32 and torch.isfinite(frames).all()


@pytest.mark.parametrize("switch", ["reuse_reference", "batch_guidance"])
def test_baseline_switches_give_the_same_video(pipe, switch):
    """The slow baseline paths (ReferenceNet every step, separate guidance passes) must agree
    with the fast defaults: the optimisations may not change the result."""
    audio = features(5)
    fast = run(pipe, audio).frames
    slow = run(pipe, audio, settings=GenerationSettings(**{**SETTINGS.__dict__, switch: False})).frames
    assert torch.allclose(fast, slow, atol=1e-5)


def test_offload_mode_gives_the_same_video(tiny_model):
    import copy

    pipe = EMOPipeline(copy.deepcopy(tiny_model), device="cpu", offload=True)
    assert pipe.model.backbone.conv_in.weight.device.type == "cpu"
    audio = features(5)
    assert torch.allclose(run(pipe, audio).frames, run(EMOPipeline(tiny_model), audio).frames, atol=1e-6)


def test_channels_last_gives_the_same_video(tiny_model):
    import copy

    pipe = EMOPipeline(copy.deepcopy(tiny_model)).optimize(channels_last=True)
    assert pipe.model.backbone.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    audio = features(3)
    assert torch.allclose(run(pipe, audio).frames, run(EMOPipeline(tiny_model), audio).frames, atol=1e-5)


def test_sizes_that_do_not_halve_evenly_work(pipe):
    """72 px is 9 latent cells: 9 -> 5 on the way down, each up level resizes to its skip."""
    frames = run(pipe, features(4), settings=GenerationSettings(**{**SETTINGS.__dict__, "size": 72})).frames
    assert frames.shape[1:] == (72, 72, 3) and torch.isfinite(frames).all()


# ---- overlap: clips join by re-making the previous clip's last frames (issue 20, seams) ---------
def overlap_settings(overlap, **more):
    return GenerationSettings(**{**SETTINGS.__dict__, "frames_per_clip": 4, "motion_frames": 2,
                                 "overlap_frames": overlap, **more})


def test_overlap_re_makes_the_previous_clips_last_frames(pipe, monkeypatch):
    """Each clip after the first denoises f + o frames, its first o held on the previous clip's
    path; only its f new frames come out, so the first clip and the frame count do not change,
    and later clips do."""
    shapes, original = [], pipe._denoise

    def recording(scheduler, s, generator, shape, *args, **kwargs):
        shapes.append((shape[2], kwargs.get("follow") is not None, kwargs.get("record")))
        return original(scheduler, s, generator, shape, *args, **kwargs)

    monkeypatch.setattr(pipe, "_denoise", recording)
    audio = features(11)
    plain = run(pipe, audio, settings=overlap_settings(0)).frames
    shapes.clear()
    joined = run(pipe, audio, settings=overlap_settings(2)).frames
    assert shapes == [(4, False, (2, 2)), (6, True, (4, 2)), (6, True, None)]
    assert joined.shape == plain.shape == (11, 64, 64, 3)
    assert torch.equal(joined[:4], plain[:4])
    assert (joined[4:] - plain[4:]).abs().max() > 1e-4
    assert torch.equal(joined, run(pipe, audio, settings=overlap_settings(2)).frames)  # deterministic


def test_overlap_motion_frames_come_before_the_overlap(pipe, monkeypatch):
    """With overlap o, the next clip's motion frames are the n frames before the o it re-makes:
    the last n + o decoded frames are encoded."""
    encoded = record_encodes(pipe, monkeypatch)
    chunks = list(pipe.iter_clips(portrait(64), features(10), face_mask=box_mask(64), settings=overlap_settings(1)))
    assert [tuple(p.shape) for p in encoded] == [(1, 3, 64, 64), (3, 3, 64, 64), (3, 3, 64, 64)]
    for clip, pixels in enumerate(encoded[1:]):
        assert torch.equal(pixels, chunks[clip][-3:].permute(0, 3, 1, 2))


def test_overlap_settings_are_checked_and_default_to_the_model(pipe):
    defaults = pipe.config.defaults
    assert GenerationSettings().resolve(defaults).overlap_frames == defaults.overlap_frames
    with_overlap = replace(defaults, overlap_frames=4)
    # The model's overlap shrinks to a shorter clip asked for; one asked for does not.
    assert GenerationSettings(frames_per_clip=2).resolve(with_overlap).overlap_frames == 2
    with pytest.raises(ValueError, match="overlap_frames must be between 0 and frames_per_clip"):
        GenerationSettings(frames_per_clip=2, overlap_frames=3).resolve(defaults)
    with pytest.raises(ValueError, match="overlap_frames"):
        replace(defaults, overlap_frames=13)
