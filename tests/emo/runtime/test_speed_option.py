"""`generate --speed-from-audio MIN MAX`: one speed per frame that follows the voice's loudness."""

from __future__ import annotations

import argparse

import pytest
import torch

from emo.audio import AudioFeatures
from emo.cli import main
from emo.runtime.jobs import add_job_options, job_speed
from emo.speed_from_audio import speed_from_audio
from tests.helpers import portrait, sine, write_wav


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_job_options(parser)
    return parser.parse_args(list(argv))


def features_of(waveform: torch.Tensor, rate: int, fps: float = 25.0) -> AudioFeatures:
    frames = int(-(-waveform.shape[-1] * fps // rate))
    return AudioFeatures(features=torch.zeros(frames, 1, 4), fps=fps, waveform=waveform, sample_rate=rate)


def test_speed_from_audio_gives_the_pipeline_one_speed_per_frame():
    waveform = sine(2.0, 16000)
    waveform[:, 16000:] *= 0.1  # the second second 20 dB quieter
    features = features_of(waveform, 16000)
    speeds = job_speed(options("--speed-from-audio", "0.2", "1.2"), features)
    assert torch.equal(speeds, speed_from_audio(waveform, 16000, 25.0, 50, 0.2, 1.2))
    assert speeds[:20].mean() > speeds[30:].mean() + 0.3
    assert job_speed(options("--speed", "0.7"), features) == 0.7
    assert job_speed(options(), features) is None


def test_bad_speed_options_fail_in_one_line(tmp_path, tiny_checkpoint, capsys):
    from PIL import Image

    Image.fromarray((portrait(64) * 255).to(torch.uint8).numpy()).save(tmp_path / "portrait.png")
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[12:52, 12:52] = 255
    Image.fromarray(mask.numpy()).save(tmp_path / "mask.png")
    write_wav(tmp_path / "voice.wav", sine(0.4, 16000), 16000)
    base = ["generate", "--quiet", "--image", str(tmp_path / "portrait.png"), "--audio", str(tmp_path / "voice.wav"),
            "--checkpoint", str(tiny_checkpoint), "--mask", str(tmp_path / "mask.png"), "--steps", "1"]
    for extra, message in ((["--speed", "0.5", "--speed-from-audio", "0.2", "1.2"],
                            "--speed 0.5 and --speed-from-audio both given; give one of them"),
                           (["--speed-from-audio", "1.2", "0.2"],
                            "--speed-from-audio: min_speed 1.2 is above max_speed 0.2")):
        out = tmp_path / "talk.mp4"
        assert main([*base, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
        assert not out.exists()
    with pytest.raises(SystemExit):
        options("--speed-from-audio", "0.2")  # two numbers
