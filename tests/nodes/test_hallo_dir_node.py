"""EMO Load Hallo with a whole Hallo pretrained_models folder (hallo_dir) in ComfyUI/models/hallo:
a real run through the node functions, with Hallo's identity, masks and audio front end."""

from __future__ import annotations

import shutil

import pytest
import torch

from emo.image import load_image
from nodes import comfy_services as services
from nodes.audio import EMOAudioEncode
from nodes.model import FROM_HALLO_DIR, EMOHalloLoader, load_hallo
from nodes.reference import EMOLoadReference
from nodes.sampler import EMOSampler
from tests.emo.families.hallo.hallo_folder import PHOTO, build_hallo_folder, face_fixture, temporal_heads
from tests.helpers import sine


@pytest.fixture(scope="module")
def hallo_models(tmp_path_factory):
    face = face_fixture()
    models = tmp_path_factory.mktemp("comfy_models") / "hallo"
    _, data = build_hallo_folder(models / "pretrained_models", arcface_input=True)
    return {"models": models, "data": data, "photo": face / "photos" / PHOTO}


@pytest.fixture
def hallo(hallo_models):
    services.set_model_folders(services.HALLO_FOLDER, hallo_models["models"])  # conftest resets it
    return hallo_models


def test_loader_lists_hallo_folders(hallo):
    optional = EMOHalloLoader.INPUT_TYPES()["optional"]
    assert optional["hallo_dir"][0] == ["none", "pretrained_models"]
    assert EMOHalloLoader.INPUT_TYPES()["required"]["net_name"][0][0] == FROM_HALLO_DIR


def test_hallo_dir_runs_end_to_end_through_the_nodes(hallo):
    handle = load_hallo(FROM_HALLO_DIR, FROM_HALLO_DIR, FROM_HALLO_DIR, "fp32", hallo_dir="pretrained_models",
                        temporal_heads=temporal_heads(hallo["data"]))
    model = handle.model
    assert model.config.family == "hallo" and model.config.unet.num_attention_heads == (2, 4, 8, 8)
    assert model.hallo_identity.folder == hallo["models"] / "pretrained_models" / "face_analysis"
    voice = {"waveform": sine(0.32, 16000)[None], "sample_rate": 16000}
    features = EMOAudioEncode().encode(voice, handle, 25.0)["result"][0]
    # Hallo's audio front end (the family's encode_audio), not EMO's.
    expected = model.family.encode_audio(model, voice["waveform"], 16000, 25.0)
    assert torch.equal(features.features, expected.features) and features.num_frames == 8
    photo = load_image(hallo["photo"])[None]
    reference, _ = EMOLoadReference().prepare(photo, 128, "center")

    def run(handle):
        return EMOSampler().sample(handle, reference, features, 0, 1, 2.0, "ddim", 4, 2)["result"][0]

    frames = run(handle)
    assert frames.shape == (8, 128, 128, 3)
    assert torch.equal(frames, run(handle))
    off = load_hallo(FROM_HALLO_DIR, FROM_HALLO_DIR, FROM_HALLO_DIR, "fp32", hallo_dir="pretrained_models",
                     identity="off", temporal_heads=temporal_heads(hallo["data"]))
    assert (run(off) - frames).abs().max() > 1e-6


def test_hallo_dir_errors_name_the_node_the_file_and_where_it_goes(hallo, tmp_path):
    broken = tmp_path / "hallo"
    shutil.copytree(hallo["models"] / "pretrained_models", broken / "pretrained_models")
    (broken / "pretrained_models" / "wav2vec" / "wav2vec2-base-960h" / "config.json").unlink()
    services.set_model_folders(services.HALLO_FOLDER, broken)
    assert EMOHalloLoader.INPUT_TYPES()["optional"]["hallo_dir"][0] == ["none", "pretrained_models"]
    with pytest.raises(FileNotFoundError, match=r"^EMO Load Hallo: wav2vec/wav2vec2-base-960h/config\.json missing"):
        EMOHalloLoader().load(FROM_HALLO_DIR, FROM_HALLO_DIR, FROM_HALLO_DIR, "fp32", "pretrained_models")
    with pytest.raises(FileNotFoundError, match=r"^EMO Load Hallo: no Hallo folder 'gone'"):
        EMOHalloLoader().load(FROM_HALLO_DIR, FROM_HALLO_DIR, FROM_HALLO_DIR, "fp32", "gone")
    with pytest.raises(ValueError, match=r"^EMO Load Hallo: \(from hallo_dir\) is chosen but hallo_dir is none"):
        EMOHalloLoader().load(FROM_HALLO_DIR, FROM_HALLO_DIR, FROM_HALLO_DIR, "fp32")
