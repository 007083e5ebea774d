"""EchoMimic from the command line: `emo generate --echomimic-dir [--acc]` and `emo convert --from
echomimic` on a tiny pretrained_weights folder in the released layout (the parity fixture's
weights under the real file names), and one clear line for each wrong folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from emo.checkpoints import describe, load_checkpoint
from emo.cli import build_parser, main
from emo.families.echomimic import convert as echomimic_convert
from emo.families.echomimic.whisper import WhisperDims, WhisperEncoder
from emo.runtime.jobs import echomimic_pipeline, prepare_job, read_job_inputs, render_job
from emo.video import probe_video
from tests.emo.families.echomimic.fixtures import make_tiny_echomimic_folder, motion_heads
from tests.helpers import portrait, sine, write_wav

SIZE = 96  # the fixture model's pixels (12x12 latents)
SECONDS = 1.0
FRAMES = 24  # ceil(1.0 s x 24 fps, EchoMimic's frame rate)


@pytest.fixture(scope="module")
def echomimic(tmp_path_factory):
    """(folder with V1 and acc files, the fixture's json)."""
    return make_tiny_echomimic_folder(tmp_path_factory.mktemp("echomimic") / "pretrained_weights")


@pytest.fixture(autouse=True)
def tiny_motion_heads(echomimic, monkeypatch):
    """The fixture's motion modules have fewer heads than the released 8 (not in the files)."""
    torch.set_num_threads(1)
    monkeypatch.setattr(echomimic_convert, "MOTION_HEADS", motion_heads(echomimic[1]))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("echomimic_media")
    Image.fromarray((portrait(SIZE) * 255).to(torch.uint8).numpy()).save(folder / "portrait.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[24:72, 28:68] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    write_wav(folder / "voice.wav", sine(SECONDS, 22050, channels=2), 22050)
    return folder


def generate_argv(media, out, *extra) -> list[str]:
    return ["generate", "--quiet", "--image", str(media / "portrait.png"), "--audio", str(media / "voice.wav"),
            "--mask", str(media / "mask.png"), "--crop", "center", "--size", str(SIZE), "--out", str(out), *extra]


def test_echomimic_generate_from_the_folder_writes_the_video(echomimic, media, tmp_path, capsys):
    folder, _ = echomimic
    out = tmp_path / "echo.mp4"
    assert main(generate_argv(media, out, "--echomimic-dir", str(folder), "--steps", "2")) == 0
    info = probe_video(out)
    assert info["frames"] == FRAMES and info["fps"] == pytest.approx(24.0)  # EchoMimic's 24 fps by default
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    assert info["audio_seconds"] == pytest.approx(SECONDS, abs=0.03)
    assert f"{FRAMES} frames at 24 fps" in capsys.readouterr().out


def test_echomimic_acc_uses_its_own_defaults(echomimic, media, tmp_path):
    """--acc: denoising_unet_acc.pth with acc's 6 steps and cfg 1.0 (no guidance); V1: 30 at 2.5.
    Every window of every step is one progress unit; the video has one frame per audio frame."""
    folder, _ = echomimic
    args = build_parser().parse_args(generate_argv(media, tmp_path / "acc.mp4", "--echomimic-dir", str(folder),
                                                   "--acc"))
    pipeline = echomimic_pipeline(args, torch.device("cpu"))
    assert pipeline.config.family_options["variant"] == "acc"
    video = prepare_job(pipeline, args, read_job_inputs(args))
    assert (video.resolved.steps, video.resolved.guidance_scale) == (6, 1.0)
    assert (video.resolved.frames_per_clip, video.resolved.motion_frames, video.resolved.fps) == (12, 3, 24.0)
    assert video.num_frames == FRAMES
    assert video.total_steps == 6 * 3  # windows of 12 overlapping by 3 start at 0, 9, 18
    seen = []
    render_job(video, seen.append)
    assert [p.done for p in seen] == list(range(1, video.total_steps + 1))
    assert probe_video(video.out)["frames"] == FRAMES

    v1 = build_parser().parse_args(generate_argv(media, tmp_path / "v1.mp4", "--echomimic-dir", str(folder)))
    v1_pipeline = echomimic_pipeline(v1, torch.device("cpu"))
    resolved = prepare_job(v1_pipeline, v1, read_job_inputs(v1)).resolved
    assert (resolved.steps, resolved.guidance_scale) == (30, 2.5)


def test_echomimic_convert_accounts_for_every_key(echomimic, tmp_path, capsys):
    folder, _ = echomimic
    out = tmp_path / "echomimic.safetensors"
    assert main(["convert", "--from", "echomimic", "--in", str(folder), "--out", str(out), "--precision",
                 "fp32"]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = load_checkpoint(out)
    direct = echomimic_convert.load_echomimic_folder(folder, motion_heads=echomimic_convert.MOTION_HEADS)
    assert converted.config == direct.config and converted.config.family == "echomimic"
    expected = direct.state_dict()
    state = converted.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    reference = torch.load(folder / "reference_unet.pth", weights_only=True)
    assert all(torch.equal(state[f"reference_net.{k}"], v) for k, v in reference.items())

    acc = tmp_path / "echomimic_acc.safetensors"
    assert main(["convert", "--from", "echomimic", "--in", str(folder), "--acc", "--out", str(acc)]) == 0
    info = describe(acc)
    assert info["defaults"]["steps"] == 6 and info["defaults"]["guidance_scale"] == 1.0
    assert "EchoMimic acc" in info["description"]
    assert load_checkpoint(acc).config.family_options["variant"] == "acc"


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1  # one line, no traceback
    return error


def test_echomimic_folder_missing_a_file_is_one_clear_line(echomimic, media, tmp_path, capsys):
    folder = shutil.copytree(echomimic[0], tmp_path / "pretrained_weights")
    (folder / "face_locator.pth").unlink()
    out = tmp_path / "never.mp4"
    error = _fails(generate_argv(media, out, "--echomimic-dir", str(folder)), capsys)
    assert "face_locator.pth (the face locator) goes at " + str(folder / "face_locator.pth") in error
    assert not out.exists()
    shutil.rmtree(folder / "sd-vae-ft-mse")
    error = _fails(["convert", "--from", "echomimic", "--in", str(folder), "--out", str(tmp_path / "x.safetensors")],
                   capsys)
    assert "missing 2 file(s)" in error and "sd-vae-ft-mse" in error and "face_locator.pth" in error
    assert not (tmp_path / "x.safetensors").exists()


def test_echomimic_refuses_another_familys_folder(media, tmp_path, capsys):
    hallo = tmp_path / "pretrained_models"
    (hallo / "hallo").mkdir(parents=True)
    torch.save({"reference_unet.conv_in.weight": torch.zeros(1)}, hallo / "hallo" / "net.pth")
    error = _fails(generate_argv(media, tmp_path / "never.mp4", "--echomimic-dir", str(hallo)), capsys)
    assert "not an EchoMimic pretrained_weights folder" in error and "Hallo" in error


def test_echomimic_wrong_whisper_dimensions_are_named(echomimic, media, tmp_path, capsys):
    """A whisper-base encoder (512 wide) where whisper-tiny belongs: named before any torch shape
    mismatch."""
    folder = shutil.copytree(echomimic[0], tmp_path / "pretrained_weights")
    dims = WhisperDims(n_audio_state=512, n_audio_head=8, n_audio_layer=1)
    state = {f"encoder.{k}": v for k, v in WhisperEncoder(dims).state_dict().items()}
    torch.save({"dims": {**vars(dims), "n_vocab": 51865}, "model_state_dict": state},
               folder / "audio_processor" / "whisper_tiny.pt")
    error = _fails(generate_argv(media, tmp_path / "never.mp4", "--echomimic-dir", str(folder)), capsys)
    assert "wrong whisper dimensions" in error and "whisper-base" in error and "whisper_tiny.pt" in error


def test_echomimic_options_that_do_not_go_together(echomimic, media, tmp_path, capsys):
    folder, _ = echomimic
    assert "give --echomimic-dir PATH too" in _fails(generate_argv(media, tmp_path / "a.mp4", "--acc"), capsys)
    error = _fails(generate_argv(media, tmp_path / "b.mp4", "--echomimic-dir", str(folder), "--checkpoint",
                                 str(tmp_path / "model.safetensors")), capsys)
    assert "both given" in error
    error = _fails(["convert", "--from", "echomimic", "--in", str(folder), "--vae", "vae", "--out",
                    str(tmp_path / "c.safetensors")], capsys)
    assert "leave out --vae" in error
    error = _fails(["convert", "--from", "hallo", "--in", "net.pth", "--out", str(tmp_path / "d.safetensors")],
                   capsys)
    assert "--from hallo needs --vae and --wav2vec" in error
