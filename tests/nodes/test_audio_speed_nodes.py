"""AudioEncode and SpeedControl."""

from __future__ import annotations

import math

import pytest
import torch

from emo.audio import AudioFeatures
from emo.pipeline import SpeedCurve
from nodes.audio import EMOAudioEncode
from nodes.speed import EMOSpeed, EMOSpeedControl
from tests.helpers import sine


# ---- AudioEncode ---------------------------------------------------------------------------------
def test_encode_gives_one_token_set_per_frame_and_the_audio_used(emo_model, voice):
    out = EMOAudioEncode().encode(voice, emo_model, 25.0)
    features, frame_count, used = out["result"]
    assert isinstance(features, AudioFeatures) and features.fps == 25.0
    assert frame_count == features.num_frames == math.ceil(0.6 * 25) == 15
    assert used["sample_rate"] == 22050 and used["waveform"].shape == voice["waveform"].shape
    assert torch.equal(used["waveform"], voice["waveform"])
    assert out["ui"]["emo_readout"] == [{"frames": 15, "fps": 25.0, "seconds": 0.6}]


def test_trim_is_reflected_in_frames_and_audio(emo_model):
    waveform = sine(2.0, 16000)
    audio = {"waveform": waveform[None], "sample_rate": 16000}
    features, frame_count, used = EMOAudioEncode().encode(audio, emo_model, 30.0, 0.5, 1.0)["result"]
    assert frame_count == 30
    assert torch.equal(used["waveform"][0], waveform[:, 8000:24000])
    # duration 0 = to the end; a duration past the end is shortened to the end
    _, frame_count, used = EMOAudioEncode().encode(audio, emo_model, 25.0, 1.5, 0.0)["result"]
    assert frame_count == 13 and used["waveform"].shape[-1] == 8000
    _, frame_count, _ = EMOAudioEncode().encode(audio, emo_model, 25.0, 1.5, 10.0)["result"]
    assert frame_count == 13


def test_batch_uses_the_first_clip(emo_model, caplog):
    batch = torch.stack([sine(0.4, 16000, seed=1), sine(0.4, 16000, seed=2)])
    with caplog.at_level("INFO"):
        _, _, used = EMOAudioEncode().encode({"waveform": batch, "sample_rate": 16000}, emo_model, 25.0)["result"]
    assert torch.equal(used["waveform"][0], batch[0])
    assert "batch of 2 clips, using the first" in caplog.text


def test_audio_errors(emo_model, voice):
    with pytest.raises(ValueError, match=r"EMO Audio Encode: start_seconds=5 is at or past the end of the 0.60 s audio"):
        EMOAudioEncode().encode(voice, emo_model, 25.0, 5.0)
    with pytest.raises(ValueError, match="EMO Audio Encode: expected an AUDIO input"):
        EMOAudioEncode().encode(torch.zeros(1, 100), emo_model, 25.0)
    with pytest.raises(ValueError, match="EMO Audio Encode: the AUDIO is empty"):
        EMOAudioEncode().encode({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, emo_model, 25.0)
    with pytest.raises(ValueError, match="EMO Audio Encode: the model input must come from EMO Load Checkpoint"):
        EMOAudioEncode().encode(voice, "model.safetensors", 25.0)


# ---- SpeedControl ------------------------------------------------------------------------------------
def test_constant_speed():
    (speed,) = EMOSpeedControl().make(1.2)
    assert speed == EMOSpeed(1.2) and speed.for_pipeline() == 1.2
    tooltip = EMOSpeedControl.INPUT_TYPES()["required"]["speed"][1]["tooltip"]
    assert "speech ~0.5" in tooltip and "singing ~1.2" in tooltip


def test_keyframes_make_a_curve():
    (speed,) = EMOSpeedControl().make(0.5, "# speech, then the chorus\n2.0: 1.2\n0: 0.4, 1: 0.6\n")
    assert speed.keyframes == ((0.0, 0.4), (1.0, 0.6), (2.0, 1.2))
    curve = speed.for_pipeline()
    assert isinstance(curve, SpeedCurve)
    values = curve.sample(76, 25.0)
    assert values[0] == pytest.approx(0.4) and values[25] == pytest.approx(0.6)
    assert values[-1] == pytest.approx(1.2) and values[12] == pytest.approx(0.496)


@pytest.mark.parametrize("text, message", [
    ("0 0.5", r"cannot read keyframe 1 '0 0.5'; write 'seconds: speed' pairs"),
    ("0: 0.5\n1: fast", r"cannot read keyframe 2 '1: fast'"),
    ("-1: 0.5", r"keyframe 1 '-1: 0.5' needs a time >= 0 s"),
    ("1: 0.5\n1: 0.7", r"two keyframes share a time"),
])
def test_bad_keyframes(text, message):
    with pytest.raises(ValueError, match="EMO Speed Control: " + message):
        EMOSpeedControl().make(0.5, text)
