"""`emo generate --hallo-dir PATH`: a Hallo pretrained_models folder to a video in one step, with
identity, landmark masks, Hallo's audio front end and optional vocal separation."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest

from emo.cli import main
from tests.emo.families.hallo.hallo_folder import PHOTO, build_hallo_folder, face_fixture
from tests.helpers import sine, write_wav

FAST = ["--size", "128", "--steps", "1", "--frames-per-clip", "4", "--motion-frames", "2", "--crop", "center",
        "--no-paste-back", "--device", "cpu", "--precision", "fp32", "-q"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    face = face_fixture()
    tmp = tmp_path_factory.mktemp("hallo_cli")
    root, _ = build_hallo_folder(tmp / "pretrained_models", arcface_input=True)
    audio = write_wav(tmp / "voice.wav", sine(0.32, 44100, channels=2), 44100)
    return {"root": root, "audio": audio, "photo": face / "photos" / PHOTO, "tmp": tmp}


def frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def generate(setup, out, *extra):
    return main(["generate", "--image", str(setup["photo"]), "--audio", str(setup["audio"]), "--out", str(out),
                 *FAST, *extra])


def test_generate_from_a_hallo_folder(setup, capsys):
    out = setup["tmp"] / "hallo.mp4"
    assert generate(setup, out, "--hallo-dir", str(setup["root"])) == 0, capsys.readouterr().err
    video = frames(out)
    assert video.shape == (8, 128, 128, 3)  # ceil(0.32 s x 25 fps) frames, Hallo's count
    # Identity off by choice gives another video; separating the vocals first another again.
    no_identity = setup["tmp"] / "no_identity.mp4"
    assert generate(setup, no_identity, "--hallo-dir", str(setup["root"]), "--no-identity") == 0
    assert np.abs(frames(no_identity).astype(int) - video).max() > 0
    separated = setup["tmp"] / "separated.mp4"
    pytest.importorskip("onnxruntime")
    assert generate(setup, separated, "--hallo-dir", str(setup["root"]), "--separate-vocals") == 0, \
        capsys.readouterr().err
    assert frames(separated).shape == video.shape
    assert np.abs(frames(separated).astype(int) - video).max() > 0


def _error(capsys) -> str:
    """The one error line (a size warning may come before it: the tiny folder runs at 128 px)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if " warning: " not in line]
    assert len(lines) == 1 and lines[0].startswith("emo generate: error: "), lines
    return lines[0]


def test_folder_errors_are_one_line_and_say_where_files_go(setup, tmp_path, capsys):
    root = tmp_path / "pretrained_models"
    shutil.copytree(setup["root"], root)
    (root / "hallo" / "net.pth").unlink()
    assert generate(setup, tmp_path / "a.mp4", "--hallo-dir", str(root)) == 2
    err = _error(capsys)
    assert "no net.pth" in err and str(root / "hallo" / "net.pth") in err
    shutil.copy(setup["root"] / "hallo" / "net.pth", root / "hallo" / "net.pth")
    shutil.rmtree(root / "face_analysis")
    assert generate(setup, tmp_path / "b.mp4", "--hallo-dir", str(root)) == 2
    err = _error(capsys)
    assert "face_analysis/models" in err and "--no-identity" in err and "buffalo" not in err
    shutil.rmtree(root / "audio_separator")
    assert generate(setup, tmp_path / "c.mp4", "--hallo-dir", str(root), "--no-identity", "--separate-vocals") == 2
    assert "audio_separator/Kim_Vocal_2.onnx" in _error(capsys)
    assert generate(setup, tmp_path / "d.mp4", "--hallo-dir", str(root), "--checkpoint", "x.safetensors") == 2
    assert "give one" in _error(capsys)
    assert not list(tmp_path.glob("*.mp4"))


def test_help_names_hallos_files_not_buffalo(capsys):
    assert main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--hallo-dir" in text and "--no-identity" in text and "--separate-vocals" in text
    assert "antelopev2" in text and "buffalo" not in text


def test_converted_hallo_checkpoint_takes_face_analysis_or_an_explicit_choice(setup, tmp_path, capsys):
    from emo.checkpoints import save_checkpoint
    from emo.families.hallo.folder import load_hallo_folder

    model, _ = load_hallo_folder(setup["root"])
    checkpoint = save_checkpoint(model, tmp_path / "hallo.safetensors")
    assert generate(setup, tmp_path / "a.mp4", "--checkpoint", str(checkpoint)) == 2
    err = _error(capsys)
    assert "--no-identity" in err and "face_analysis" in err
    assert not (tmp_path / "a.mp4").exists()
    out = tmp_path / "b.mp4"
    assert generate(setup, out, "--checkpoint", str(checkpoint), "--face-analysis",
                    str(setup["root"] / "face_analysis")) == 0, capsys.readouterr().err
    assert frames(out).shape == (8, 128, 128, 3)
