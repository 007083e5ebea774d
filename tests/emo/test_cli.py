"""`python -m emo`: the main job end to end, and one clear line for every bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from emo.checkpoints import DEMO_CHECKPOINT
from emo.cli import main
from emo.video import probe_video
from tests.helpers import REPO, portrait, sine, write_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    image = (portrait(96) * 255).to(torch.uint8).numpy()
    rgba = np.concatenate([image, np.full((96, 96, 1), 200, np.uint8)], axis=-1)
    Image.fromarray(rgba[:, 8:88], "RGBA").save(folder / "portrait.png")  # 80x96, RGBA
    mask = np.zeros((96, 80), np.uint8)
    mask[20:70, 15:65] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    write_wav(folder / "voice.wav", sine(2.3, 44100, channels=2), 44100)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.png").write_bytes(b"this is not an image")
    return folder


def generate_args(media, checkpoint, out, **overrides):
    args = {"--image": media / "portrait.png", "--audio": media / "voice.wav", "--mask": media / "mask.png",
            "--checkpoint": checkpoint, "--out": out, "--steps": "1", "--frames-per-clip": "12"}
    args.update(overrides)
    flat = ["generate", "--quiet"]
    for key, value in args.items():
        if value is not None:
            flat += [key, str(value)]
    return flat


def test_generate_writes_mp4_with_audio(media, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    assert main(generate_args(media, tiny_checkpoint, out)) == 0
    info = probe_video(out)
    assert info["frames"] == 58  # ceil(2.3 s x 25 fps)
    assert info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (80, 96)  # the 80x96 portrait: the square pasted back
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(2.3, abs=0.03)
    assert "58 frames" in capsys.readouterr().out


def test_generate_webm_with_other_fps_and_trim(media, tiny_checkpoint, tmp_path):
    out = tmp_path / "talk.webm"
    assert main(generate_args(media, tiny_checkpoint, out, **{"--fps": "10", "--start": "0.5",
                                                              "--duration": "1.0"})) == 0
    info = probe_video(out)
    assert info["frames"] == 10 and info["fps"] == pytest.approx(10.0)
    assert info["audio_seconds"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("case, fragment", [
    ("missing image", "no file at"),
    ("garbage image", "garbage.png"),
    ("empty audio", "empty"),
    ("missing checkpoint", "EMO checkpoint not found"),
    ("mismatched checkpoint", "does not match"),
    ("wrong extension", "--out must end in"),
])
def test_bad_inputs_fail_with_one_line_and_no_output(media, tiny_checkpoint, tmp_path, capsys, case, fragment):
    out = tmp_path / "out.mp4"
    overrides = {}
    if case == "missing image":
        overrides["--image"] = tmp_path / "nope.png"
    elif case == "garbage image":
        overrides["--image"] = media / "garbage.png"
    elif case == "empty audio":
        overrides["--audio"] = media / "empty.wav"
    elif case == "missing checkpoint":
        overrides["--checkpoint"] = tmp_path / "nope.safetensors"
    elif case == "mismatched checkpoint":
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        state = load_file(str(tiny_checkpoint))
        with safe_open(str(tiny_checkpoint), framework="pt") as handle:
            metadata = handle.metadata()
        state.pop("vae.encoder.conv_in.weight")
        save_file(state, str(tmp_path / "bad.safetensors"), metadata=metadata)
        overrides["--checkpoint"] = tmp_path / "bad.safetensors"
    elif case == "wrong extension":
        out = tmp_path / "out.gif"
    assert main(generate_args(media, tiny_checkpoint, out, **overrides)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emo generate: error:") and len(err.splitlines()) == 1
    assert fragment.lower() in err.lower()
    assert list(tmp_path.glob("out*")) == []


def test_interrupted_generation_leaves_no_file(media, tiny_checkpoint, tmp_path, monkeypatch):
    import emo.pipeline

    original = emo.pipeline.EMOPipeline._denoise
    calls = []

    def interrupt_second_clip(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(emo.pipeline.EMOPipeline, "_denoise", interrupt_second_clip)
    out = tmp_path / "talk.mp4"
    assert main(generate_args(media, tiny_checkpoint, out)) == 130
    assert list(tmp_path.iterdir()) == []


def test_no_face_without_mask_says_to_pass_one(media, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    assert main(generate_args(media, tiny_checkpoint, out, **{"--mask": None})) == 2
    assert "--mask" in capsys.readouterr().err


def test_new_checkpoint_and_info(tmp_path, capsys):
    path = tmp_path / "new.safetensors"
    assert main(["new-checkpoint", "--preset", "tiny", "--out", str(path), "--seed", "3"]) == 0
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "emo-tiny" in out and "frames_per_clip=12" in out


def test_python_dash_m_emo_runs_in_a_fresh_process(media, tiny_checkpoint, tmp_path):
    out = tmp_path / "talk.mp4"
    command = [sys.executable, "-m", "emo"] + generate_args(media, tiny_checkpoint, out, **{"--duration": "0.4"})
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert probe_video(out)["frames"] == 10


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="the demo model is not shipped yet")
def test_generate_without_checkpoint_uses_the_demo_model_on_the_bundled_sample(tmp_path, capsys):
    """The README's main job: the bundled sample portrait and voice, no --checkpoint."""
    out = tmp_path / "demo.mp4"
    assets = DEMO_CHECKPOINT.parent
    args = ["generate", "--quiet", "--image", str(assets / "sample_portrait.png"), "--mask",
            str(assets / "sample_portrait_mask.png"), "--audio", str(assets / "sample_voice.wav"), "--out", str(out),
            "--duration", "1.0", "--steps", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "demo model" in printed and "synthetic" in printed
    info = probe_video(out)
    assert (info["width"], info["height"], info["frames"]) == (64, 64, 25) and info["audio_codec"] == "aac"


def test_generate_without_checkpoint_and_without_the_demo_model_says_what_to_do(media, tmp_path, capsys,
                                                                               monkeypatch):
    import emo.runtime.jobs

    monkeypatch.setattr(emo.runtime.jobs, "DEMO_CHECKPOINT", tmp_path / "missing.safetensors")
    out = tmp_path / "talk.mp4"
    assert main(generate_args(media, None, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint" in err[0] and "train_demo_model.sh" in err[0]
    assert not out.exists()


def test_bundled_sample_is_a_held_out_talker():
    from emo import synthetic

    assets = DEMO_CHECKPOINT.parent
    image = np.asarray(Image.open(assets / "sample_portrait.png").convert("RGB"))
    seed = synthetic.EVALUATION_SEED_START + 100  # scripts/make_demo_sample.py
    assert np.array_equal(image, synthetic.render_frame(synthetic.make_identity(seed), image.shape[0]))
    assert (assets / "sample_voice.wav").stat().st_size < 200_000


def test_face_embedding_files_load_and_bad_ones_fail(tmp_path):
    import numpy as np
    from safetensors.torch import save_file

    from emo.runtime.jobs import load_face_embedding as _load_face_embedding

    np.save(tmp_path / "e.npy", np.arange(4, dtype=np.float32))
    torch.save(torch.ones(2, 2), tmp_path / "e.pt")
    save_file({"embedding": torch.zeros(3)}, str(tmp_path / "e.safetensors"))
    assert _load_face_embedding(tmp_path / "e.npy").tolist() == [0, 1, 2, 3]
    assert _load_face_embedding(tmp_path / "e.pt").shape == (4,)
    assert _load_face_embedding(tmp_path / "e.safetensors").shape == (3,)
    with pytest.raises(FileNotFoundError, match="--face-embedding"):
        _load_face_embedding(tmp_path / "missing.npy")
    save_file({"a": torch.zeros(1), "b": torch.zeros(1)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match="holds 2 tensors"):
        _load_face_embedding(tmp_path / "two.safetensors")
