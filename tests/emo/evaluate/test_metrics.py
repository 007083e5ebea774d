"""The metrics measured on ground truth recover the true signals (validating the metrics themselves)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emo import synthetic
from emo.evaluate import measure, metrics
from emo.evaluate.evaluation import face_region, measure_video, seam_exclusion

HELD_OUT = [synthetic.EVALUATION_SEED_START + i for i in range(4)]


@pytest.fixture(scope="module")
def talkers():
    return [synthetic.make_talker(seed, 3.0, size=64, speed=0.7) for seed in HELD_OUT]


@pytest.fixture(scope="module")
def measured(talkers):
    return [measure_video(t.frames, t.frames[0], t.face_boxes[0], t.mouth_open, frames_per_clip=12) for t in talkers]


def test_ground_truth_lip_sync_is_near_perfect_at_offset_zero(talkers, measured):
    for talker, m in zip(talkers, measured):
        assert m.lip_sync.correlation >= 0.95, talker.seed
        assert m.lip_sync.best_offset == 0
        assert m.registration_failures == 0


def test_lip_sync_finds_a_known_offset_and_survives_blur(talkers):
    talker = talkers[0]
    lag = 3  # the video shows each mouth 3 frames late
    late = np.concatenate([np.repeat(talker.frames[:1], lag, 0), talker.frames[:-lag]])
    m = measure_video(late, talker.frames[0], talker.face_boxes[0], talker.mouth_open, 12)
    assert m.lip_sync.best_offset == lag and m.lip_sync.best_correlation > 0.95
    assert m.lip_sync.correlation < 0.6
    # Blur and video coding soften the picture like a generator does; the metric still works.
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in talker.frames])
    m = measure_video(blurred, blurred[0], talker.face_boxes[0], talker.mouth_open, 12)
    assert m.lip_sync.correlation >= 0.9 and m.lip_sync.best_offset == 0
    # A mouth that never moves is not in sync; a mouth of another voice is not either.
    still = np.repeat(talker.frames[:1], talker.num_frames, 0)
    assert measure_video(still, talker.frames[0], talker.face_boxes[0], talker.mouth_open, 12).lip_sync.correlation == 0
    other_voice = talkers[1].mouth_open
    m = measure_video(talker.frames, talker.frames[0], talker.face_boxes[0], other_voice, 12)
    assert abs(m.lip_sync.correlation) < 0.5


def test_measured_head_angle_follows_the_truth(talkers, measured):
    for talker, m in zip(talkers, measured):
        relative = talker.head_angle - talker.head_angle[0]
        assert np.abs(m.angles - relative).mean() < 0.3 and np.abs(m.angles - relative).max() < 1.5
        assert m.head_motion == pytest.approx(metrics.head_motion(talker.head_angle), rel=0.1)
        assert 0.35 < m.head_motion < 1.05  # about 0.7 degrees per frame, as requested (+-18 % by voice)


def test_speed_control_is_monotonic_on_ground_truth():
    speeds = [0.0, 0.3, 0.6, 0.9, 1.2]
    motion, truth = [], []
    for speed in speeds:
        talker = synthetic.make_talker(HELD_OUT[1], 2.0, size=64, speed=speed)
        layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
        motion.append(metrics.head_motion(measure.register(talker.frames, layout).angles))
        truth.append(metrics.head_motion(talker.head_angle))
    control = metrics.speed_control(speeds, motion)
    assert control.increasing and control.spearman == pytest.approx(1.0)
    assert motion[0] < 0.1  # a still head measures still
    assert np.allclose(motion[1:], truth[1:], rtol=0.1)  # degrees per frame, as drawn
    # This voice nods a little faster or slower than the average one (whose gain is 1).
    assert control.gain == pytest.approx(metrics.speed_gain(speeds, truth), rel=0.1)
    assert 0.7 < control.gain < 1.3
    assert not metrics.speed_control([0.2, 0.7, 1.2], [0.5, 0.4, 0.9]).increasing


def test_speed_gain_tells_following_the_speed_from_noise():
    # A rank of 1 from motion that barely moves (the shipped model's numbers on the earlier
    # talkers) has a gain near 0; motion that follows the speed has a gain near 1.
    still = metrics.speed_control([0.2, 0.7, 1.2], [0.861, 0.867, 0.869])
    assert still.spearman == 1.0 and still.gain == pytest.approx(0.008)
    following = metrics.speed_control([0.2, 0.7, 1.2], [0.25, 0.71, 1.18])
    assert following.gain == pytest.approx(0.93)
    assert metrics.speed_gain([1.2, 0.2], [0.3, 0.8]) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="must not all be equal"):
        metrics.speed_gain([0.5, 0.5], [0.1, 0.2])


def test_identity_distance_is_small_for_the_same_person_and_large_for_another(talkers, measured):
    talker = talkers[0]
    region = face_region(talker.face_boxes[0], 64)
    own = measured[0].identity
    # Another identity, moving the same way, brought into the reference's pose the same way.
    impostor = synthetic.make_talker(HELD_OUT[0], 3.0, size=64, speed=0.7, identity_seed=HELD_OUT[0] + 50)
    layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
    warps = measure.register(talker.frames, layout).warps
    other = metrics.identity_distance(measure.align_to_reference(impostor.frames, warps), talker.frames[0], region)
    assert own.colour < 0.1 and own.shape < 0.05
    assert other.combined > 5 * own.combined and other.colour > 0.3
    # The same face in another person's colours: shape stays close, colour does not.
    recoloured = talker.frames[..., ::-1]
    swapped = metrics.identity_distance(measure.align_to_reference(recoloured, warps), talker.frames[0], region)
    assert swapped.colour > 0.3


def test_seams_of_a_seamless_video_look_like_the_rest(talkers, measured):
    ratios = [m.seams.ratio for m in measured]
    assert all(0.8 < r < 1.25 for r in ratios), ratios
    assert all(m.seams.seams == 6 for m in measured)  # 75 frames, clips of 12


def test_seam_jumps_are_detected(talkers):
    talker = talkers[0]
    jumpy = talker.frames.copy()
    for start in range(12, talker.num_frames, 12):  # every new clip slightly brighter, as a drifting model
        jumpy[start:] = np.clip(jumpy[start:].astype(int) + 6, 0, 255).astype(np.uint8)
    layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
    stability = metrics.seam_stability(jumpy, 12, exclude=seam_exclusion(layout))
    assert stability.ratio > 3
    with pytest.raises(ValueError, match="no seam"):
        metrics.seam_stability(talker.frames[:12], 12)


def test_statistics_helpers():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    truth = np.sin(np.arange(40) / 3.0)
    assert metrics.lip_sync(np.roll(truth, -2), truth, 5).best_offset == -2  # video ahead of the audio
    with pytest.raises(ValueError, match="too few"):
        metrics.lip_sync(truth[:8], truth[:8], 5)
