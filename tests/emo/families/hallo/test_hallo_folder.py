"""A user's unchanged Hallo pretrained_models folder -> Hallo's pipeline: the architecture read
from the folder's configs and net.pth's shapes, identity and landmark masks from face_analysis,
clear errors for a missing file."""

from __future__ import annotations

import shutil

import pytest
import torch

from emo.families.hallo.folder import hallo_folder_config, load_hallo_folder, locate_hallo_folder
from emo.families.hallo.portrait import HalloPortrait
from emo.faces.boxes import FaceNotFoundError
from emo.image import load_image
from tests.emo.families.hallo.hallo_folder import PHOTO, build_hallo_folder, face_fixture, temporal_heads
from tests.emo.families.hallo.test_hallo_parity import _close, _one_step


@pytest.fixture(scope="module")
def hallo_dir(tmp_path_factory):
    face_fixture()
    return build_hallo_folder(tmp_path_factory.mktemp("pretrained_models"))


def test_config_comes_from_the_folder_and_net_pth(hallo_dir):
    root, data = hallo_dir
    expected = data["config"]
    state = {k: v for k, v in data["weights"].items()}
    config = hallo_folder_config(locate_hallo_folder(root), state, temporal_heads=temporal_heads(data))
    assert config.unet == expected.unet  # per-level heads [2, 4, 8, 8], 2 layers per block
    assert config.unet.num_attention_heads == (2, 4, 8, 8) and config.unet.layers_per_block == 2
    assert config.temporal == expected.temporal
    assert config.face_locator == expected.face_locator
    assert config.family_options == expected.family_options
    assert (config.audio.window_radius, config.audio.num_tokens, config.audio.intermediate_dim) == \
        (expected.audio.window_radius, expected.audio.num_tokens, expected.audio.intermediate_dim)
    # Without a head count in any file, the temporal attention gets Hallo's 8.
    assert hallo_folder_config(locate_hallo_folder(root), state).temporal.num_attention_heads == 8


def test_folder_model_reproduces_hallos_step(hallo_dir):
    root, data = hallo_dir
    model, folder = load_hallo_folder(root, temporal_heads=temporal_heads(data))
    assert folder.vocal_model is not None and folder.face_analysis is not None
    assert model.hallo_identity.folder == root / "face_analysis" and model.hallo_identity.identity
    noise = _one_step(model, data["t"], data["meta"])["noise"]
    _close(noise, data["t"]["output.noise_pred"], 1e-4, 1e-4)


@pytest.fixture(scope="module")
def arcface_hallo_dir(tmp_path_factory):
    face_fixture()
    return build_hallo_folder(tmp_path_factory.mktemp("pretrained_models_512"), arcface_input=True)


def test_pipeline_takes_identity_and_masks_from_face_analysis(arcface_hallo_dir):
    from emo.audio import AudioFeatures
    from emo.faces.face_analysis import load_face_analysis, bgr_from_image
    from emo.pipeline import EMOPipeline, GenerationSettings

    root, _ = arcface_hallo_dir
    model, _ = load_hallo_folder(root)
    pipe = EMOPipeline(model)
    photo = load_image(face_fixture() / "photos" / PHOTO)
    reference = torch.nn.functional.interpolate(photo.permute(2, 0, 1)[None], size=(128, 128), mode="bilinear",
                                                antialias=True)[0].permute(1, 2, 0)
    portrait = model.family.portrait_conditioning(model, reference, None)
    assert isinstance(portrait, HalloPortrait) and portrait.landmark_source in ("insightface", "mediapipe")
    analysis = load_face_analysis(root / "face_analysis")
    bgr = bgr_from_image(reference)
    expected = analysis.embedding(bgr, analysis.largest(analysis.detect(bgr)))
    assert torch.equal(portrait.embedding, torch.from_numpy(expected))  # the raw 512-d ArcFace output
    assert portrait.embedding.shape == (512,)
    # Hallo's landmark masks, not the face box's: the face rectangle drives the face locator.
    assert portrait.face_region(128).shape == (3, 128, 128)

    layers, width = model.config.audio.num_layers, model.config.audio.hidden_size
    audio = AudioFeatures(torch.randn(5, layers, width, generator=torch.Generator().manual_seed(0)), fps=25.0,
                          waveform=torch.zeros(1, 3200), sample_rate=16000)
    settings = GenerationSettings(size=128, steps=1, frames_per_clip=4, motion_frames=2, seed=1)
    with_identity = pipe(reference, audio, settings=settings).frames
    assert torch.equal(with_identity, pipe(reference, audio, settings=settings).frames)
    model.hallo_identity = type(model.hallo_identity)(root / "face_analysis", identity=False)
    without = pipe(reference, audio, settings=settings).frames
    assert (without - with_identity).abs().max() > 1e-6
    # A photo without a face: the same clear error as elsewhere.
    model.hallo_identity = type(model.hallo_identity)(root / "face_analysis", identity=True)
    with pytest.raises(FaceNotFoundError, match="no face found"):
        pipe(torch.full((128, 128, 3), 0.5), audio, settings=settings)
    # No identity source at all: an error that says what to do, never silent zeros.
    del model.hallo_identity
    with pytest.raises(ValueError, match="--no-identity"):
        pipe(reference, audio, settings=settings)


@pytest.mark.parametrize("missing", ["hallo/net.pth", "sd-vae-ft-mse/config.json",
                                     "wav2vec/wav2vec2-base-960h/config.json",
                                     "stable-diffusion-v1-5/unet/config.json"])
def test_a_missing_file_is_named_with_where_it_goes(hallo_dir, tmp_path, missing):
    root = tmp_path / "pretrained_models"
    shutil.copytree(hallo_dir[0], root)
    (root / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")) as error:
        locate_hallo_folder(root)
    assert str(root / missing) in str(error.value)


def test_missing_face_analysis_is_an_error_unless_identity_is_off(hallo_dir, tmp_path):
    root = tmp_path / "pretrained_models"
    shutil.copytree(hallo_dir[0], root)
    (root / "face_analysis" / "models" / "glintr100.onnx").chmod(0o644)
    (root / "face_analysis" / "models" / "glintr100.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="glintr100.onnx missing"):
        load_hallo_folder(root)
    shutil.rmtree(root / "face_analysis", ignore_errors=True)
    with pytest.raises(FileNotFoundError, match="face_analysis/models missing.*--no-identity"):
        load_hallo_folder(root)
    model, folder = load_hallo_folder(root, identity=False)
    assert folder.face_analysis is None and model.hallo_identity.identity is False


def test_face_models_are_loaded_once_and_freed_with_the_model(arcface_hallo_dir):
    import gc

    from emo.faces import face_analysis

    root, _ = arcface_hallo_dir
    models_dir = str((root / "face_analysis" / "models").resolve())
    face_analysis.free_face_analysis()
    model, _ = load_hallo_folder(root)
    reference = torch.nn.functional.interpolate(load_image(face_fixture() / "photos" / PHOTO).permute(2, 0, 1)[None],
                                                size=(128, 128), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
    model.family.portrait_conditioning(model, reference, None)
    cached = [v for k, v in face_analysis._CACHE.items() if k[0] == models_dir]
    model.family.portrait_conditioning(model, reference, None)
    assert len(cached) == 1 and [v for k, v in face_analysis._CACHE.items() if k[0] == models_dir] == cached
    del model
    gc.collect()
    assert not any(k[0] == models_dir for k in face_analysis._CACHE)


def test_a_hallo2_folder_loads_as_hallo2(hallo_dir, tmp_path):
    # Hallo2's pretrained_models keeps net.pth in hallo2/ (same keys as Hallo's): the release is
    # read from the folder, with Hallo2's long-audio pieces and motion-frame masking.
    root = tmp_path / "pretrained_models"
    shutil.copytree(hallo_dir[0], root)
    (root / "hallo2").mkdir()
    (root / "hallo" / "net.pth").rename(root / "hallo2" / "net.pth")
    folder = locate_hallo_folder(root)
    assert folder.release == "hallo2" and folder.net == root / "hallo2" / "net.pth"
    model, _ = load_hallo_folder(root, identity=False, temporal_heads=temporal_heads(hallo_dir[1]))
    options = model.config.family_options
    assert options["variant"] == "hallo2" and options["motion_mask_rate"] == 0.25
    assert options["audio_segment_seconds"] == 60.0


def test_a_folder_without_any_net_pth_names_every_releases_place(hallo_dir, tmp_path):
    root = tmp_path / "pretrained_models"
    shutil.copytree(hallo_dir[0], root)
    (root / "hallo" / "net.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"no net\.pth .*hallo/net\.pth.*Hallo2: .*hallo2/net\.pth.*"
                                                r"JoyHallo: .*joyhallo/net\.pth"):
        locate_hallo_folder(root)
