"""SpeedControl's mode "from audio": the curve reaches the sampler as one speed per frame, from
SpeedControl's own AUDIO or, without one, from the audio the sampler generates for; the old
inputs keep working."""

from __future__ import annotations

import pytest
import torch

from emo.pipeline import EMOPipeline
from emo.speed_from_audio import speed_from_audio
from nodes.audio import EMOAudioEncode
from nodes.reference import EMOLoadReference
from nodes.sampler import EMOSampler
from nodes.speed import EMOSpeed, EMOSpeedControl
from tests.helpers import portrait, sine


def loud_then_quiet(seconds: float = 2.0, rate: int = 16000) -> dict:
    """AUDIO: a voice-like tone, loud for the first half, 20 dB quieter after."""
    waveform = sine(seconds, rate)
    waveform[:, waveform.shape[1] // 2:] *= 0.1
    return {"waveform": waveform[None], "sample_rate": rate}


def test_old_inputs_give_the_same_speed_as_before():
    assert EMOSpeedControl().make(0.7)[0] == EMOSpeed(0.7)
    (curve,) = EMOSpeedControl().make(0.5, "0: 0.4\n2: 1.0")
    assert curve.for_pipeline().keyframes == [(0.0, 0.4), (2.0, 1.0)]
    assert curve.for_pipeline(50, 25.0).keyframes == [(0.0, 0.4), (2.0, 1.0)]  # the new arguments change nothing
    optional = EMOSpeedControl.INPUT_TYPES()["optional"]
    assert list(optional) == ["keyframes", "mode", "min_speed", "max_speed", "smoothing", "audio"]
    assert optional["mode"][1]["default"] == "speed / keyframes"


def test_from_audio_follows_its_own_audio():
    audio = loud_then_quiet()
    (speed,) = EMOSpeedControl().make(0.5, "", "from audio", 0.2, 1.4, 0.3, audio)
    assert speed.values() == [0.2, 1.4]
    curve = speed.for_pipeline(50, 25.0)
    assert torch.equal(curve, speed_from_audio(audio["waveform"], 16000, 25.0, 50, 0.2, 1.4, 0.3))
    assert curve[:20].mean() > curve[30:].mean() + 0.4 and curve.min() >= 0.2 and curve.max() <= 1.4
    # Its own audio wins over the sampler's.
    assert torch.equal(speed.for_pipeline(50, 25.0, audio=(torch.zeros(1, 32000), 16000)), curve)


def test_from_audio_without_its_own_audio_uses_the_sampler_audio():
    (speed,) = EMOSpeedControl().make(0.5, mode="from audio", min_speed=0.3, max_speed=1.0)
    audio = loud_then_quiet()
    curve = speed.for_pipeline(50, 25.0, audio=(audio["waveform"][0], 16000))
    assert torch.equal(curve, speed_from_audio(audio["waveform"][0], 16000, 25.0, 50, 0.3, 1.0, 0.5))
    with pytest.raises(ValueError, match="EMO Speed Control: the 'from audio' speed has no audio; connect EMO Audio Encode"):
        speed.for_pipeline(50, 25.0)
    with pytest.raises(ValueError, match="needs the video's frame count and fps"):
        speed.for_pipeline()


def test_from_audio_errors_and_a_mismatched_audio_warns(caplog):
    with pytest.raises(ValueError, match="EMO Speed Control: from audio needs 0 <= min_speed <= max_speed, got 1.2 and 0.4"):
        EMOSpeedControl().make(0.5, "", "from audio", 1.2, 0.4)
    with pytest.raises(ValueError, match="EMO Speed Control: unknown mode 'auto'"):
        EMOSpeedControl().make(0.5, "", "auto")
    with pytest.raises(ValueError, match="the audio input must be an AUDIO"):
        EMOSpeedControl().make(0.5, "", "from audio", audio=torch.zeros(1, 100))
    (speed,) = EMOSpeedControl().make(0.5, "", "from audio", audio=loud_then_quiet(4.0))
    with caplog.at_level("WARNING"):
        speed.for_pipeline(50, 25.0, audio=(torch.zeros(1, 32000), 16000))
    assert "its audio is 4.00 s but the video's is 2.00 s" in caplog.text


def test_the_sampler_hands_the_pipeline_one_speed_per_frame(emo_model, monkeypatch):
    audio = loud_then_quiet(0.6)
    features = EMOAudioEncode().encode(audio, emo_model, 25.0)["result"][0]  # 15 frames
    reference, _ = EMOLoadReference().prepare(portrait(64)[None], 64, "center")
    mask = torch.zeros(1, 64, 64)
    mask[:, 12:52, 16:48] = 1
    seen = []
    original = EMOPipeline.iter_clips

    def recording(self, *args, speed=None, **kwargs):
        seen.append(speed)
        return original(self, *args, speed=speed, **kwargs)

    monkeypatch.setattr(EMOPipeline, "iter_clips", recording)
    (speed,) = EMOSpeedControl().make(0.5, "", "from audio", 0.2, 1.2, 0.1)
    frames, fps = EMOSampler().sample(emo_model, reference, features, seed=0, steps=1, cfg=1.0, scheduler="ddim",
                                      frames_per_clip=8, motion_frames=2, face_mask=mask, speed=speed,
                                      unique_id="3")["result"]
    assert frames.shape == (15, 64, 64, 3)
    curve = seen[-1]
    assert isinstance(curve, torch.Tensor) and curve.shape == (15,)
    assert torch.equal(curve, speed_from_audio(features.waveform, features.sample_rate, 25.0, 15, 0.2, 1.2, 0.1))
    assert curve[:5].mean() > curve[-4:].mean()
