"""Reading EchoMimic's pretrained_weights folder: the released layout key for key, a fake folder
written from the parity fixture under the real file names, and one clear error per wrong folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from emo.families.echomimic.files import (
    denoising_unet_layout,
    face_locator_layout,
    read_echomimic_folder,
    reference_unet_layout,
)
from emo.families.echomimic.audio import whisper_features
from emo.weights.files import WeightFileError
from tests.emo.families.echomimic.fixtures import (
    WEIGHT_KEYS,
    fixture_files,
    make_pretrained_weights,
    read_fixture,
    write_vae_folder,
)
from tests.helpers import missing_fixture


def released_keys() -> dict:
    path = WEIGHT_KEYS / "echomimic_v1_keys.json"
    if not path.is_file() or not (WEIGHT_KEYS / "sd15_unet_config.json").is_file():
        missing_fixture(f"EchoMimic's released key layout ({path})")
    return {part: {k: tuple(s) for k, s in keys.items()} for part, keys in json.loads(path.read_text()).items()}


def test_echomimic_layout_is_the_released_one_key_for_key():
    real = released_keys()
    sd15 = json.loads((WEIGHT_KEYS / "sd15_unet_config.json").read_text())  # sd-image-variations' UNet config
    assert reference_unet_layout(sd15) == real["reference_unet"]
    assert denoising_unet_layout(sd15) == real["denoising_unet"]
    assert face_locator_layout(320) == real["face_locator"]
    assert len(real["reference_unet"]) == 570 and len(real["denoising_unet"]) == 1274


def test_echomimic_layout_fits_every_fixture():
    if not fixture_files():
        missing_fixture("EchoMimic parity fixtures")
    for path in fixture_files():
        tensors, meta = read_fixture(path)
        config = meta["modules"]["denoising_unet"]["base_unet_config"]
        locator = meta["modules"]["face_locator"]["kwargs"]
        expected = {"reference_unet": reference_unet_layout(config), "denoising_unet": denoising_unet_layout(config),
                    "face_locator": face_locator_layout(locator["conditioning_embedding_channels"],
                                                        locator["block_out_channels"],
                                                        locator["conditioning_channels"])}
        for part, layout in expected.items():
            stored = {k[len(part) + 1:]: tuple(v.shape) for k, v in tensors.items() if k.startswith(part + ".")}
            assert stored == layout, (path.name, part)


@pytest.fixture(scope="module")
def whisper_fixture():
    for path in fixture_files():
        tensors, meta = read_fixture(path)
        if meta["run"]["audio_input"] == "waveform":
            return path, tensors, meta
    missing_fixture("an EchoMimic parity fixture with whisper weights")


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    return write_vae_folder(tmp_path_factory.mktemp("vae") / "sd-vae-ft-mse")


@pytest.fixture(scope="module")
def pretrained(whisper_fixture, vae_folder, tmp_path_factory):
    """A v1 + acc folder, read once; tests that change files copy it first."""
    return make_pretrained_weights(whisper_fixture[0], tmp_path_factory.mktemp("echo") / "pretrained_weights",
                                   variants=("v1", "acc"), vae=vae_folder)


def copy(pretrained, tmp_path):
    return shutil.copytree(pretrained, tmp_path / "pretrained_weights")


def test_echomimic_folder_inventory_and_whisper_from_it(pretrained, whisper_fixture):
    _, tensors, meta = whisper_fixture
    folder = read_echomimic_folder(pretrained)
    assert folder.variant == "v1" and folder.variants == ("v1", "acc")
    assert folder.paths["denoising_unet"] == pretrained / "denoising_unet.pth"
    assert folder.paths["whisper"] == pretrained / "audio_processor" / "whisper_tiny.pt"
    assert folder.unet_config == meta["modules"]["denoising_unet"]["base_unet_config"]
    assert folder.face_locator_channels == tuple(meta["modules"]["face_locator"]["kwargs"]["block_out_channels"])
    face = folder.weights("face_locator")
    assert torch.equal(face["conv_out.weight"], tensors["face_locator.conv_out.weight"])
    assert len(folder.weights("motion_module")) == meta["weights"]["motion_module"]["n_keys"]
    torch.set_num_threads(1)
    features = whisper_features(folder.whisper_encoder(), tensors["input.waveform"])
    torch.testing.assert_close(features, tensors["inter.whisper_feature"], atol=1e-5, rtol=1e-5)

    acc = read_echomimic_folder(pretrained, "acc")
    assert acc.paths["denoising_unet"].name == "denoising_unet_acc.pth"
    assert acc.paths["motion_module"].name == "motion_module_acc.pth"
    assert acc.paths["reference_unet"] == folder.paths["reference_unet"]  # shared by both variants


def test_echomimic_folder_reads_nothing_until_asked(pretrained):
    folder = read_echomimic_folder(pretrained, validate=False)
    assert folder._open == {}
    folder.weights("reference_unet")
    assert list(folder._open) == ["reference_unet"]


def test_echomimic_folder_variants(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)
    (folder / "denoising_unet.pth").unlink()
    (folder / "motion_module.pth").unlink()
    assert read_echomimic_folder(folder, validate=False).variant == "acc"  # only acc there
    with pytest.raises(FileNotFoundError, match=r"missing 2 file\(s\): denoising_unet\.pth .* choose variant 'acc'"):
        read_echomimic_folder(folder, "v1")
    with pytest.raises(ValueError, match="variant must be one of"):
        read_echomimic_folder(folder, "pose")


@pytest.mark.parametrize("name", ["face_locator.pth", "audio_processor/whisper_tiny.pt", "motion_module.pth",
                                  "sd-image-variations-diffusers/unet/config.json"])
def test_echomimic_missing_file_is_named_with_its_place(pretrained, tmp_path, name):
    folder = copy(pretrained, tmp_path)
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing 1 file\(s\): {name} \(.*\) goes at {folder / name}"):
        read_echomimic_folder(folder)


def test_echomimic_vae_folder_must_hold_a_vae(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)
    shutil.rmtree(folder / "sd-vae-ft-mse")
    with pytest.raises(FileNotFoundError, match=r"sd-vae-ft-mse \(the VAE folder"):
        read_echomimic_folder(folder)
    (folder / "sd-vae-ft-mse").mkdir()
    (folder / "sd-vae-ft-mse" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(FileNotFoundError, match=r"EchoMimic VAE: no weights in folder"):
        read_echomimic_folder(folder)


def test_echomimic_parent_folder_points_to_pretrained_weights(pretrained, tmp_path):
    copy(pretrained, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"give .*pretrained_weights instead"):
        read_echomimic_folder(tmp_path)


def test_echomimic_every_key_is_checked(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)
    state = torch.load(folder / "reference_unet.pth", weights_only=True)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight"
    torch.save({k: v for k, v in state.items() if k != key}, folder / "reference_unet.pth")
    with pytest.raises(WeightFileError, match=rf"reference_unet\.pth does not have EchoMimic's reference unet "
                                              rf"layout .*1 missing keys: {key}"):
        read_echomimic_folder(folder)

    torch.save({**state, "conv_out.weight": torch.zeros(4, 32, 3, 3)}, folder / "reference_unet.pth")
    with pytest.raises(WeightFileError, match=r"1 unexpected keys: conv_out\.weight"):
        read_echomimic_folder(folder)
    torch.save(state, folder / "reference_unet.pth")

    motion = torch.load(folder / "motion_module.pth", weights_only=True)
    torch.save({**motion, "down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)}, folder / "motion_module.pth")
    with pytest.raises(WeightFileError, match=r"motion_module\.pth .* 1 unexpected keys: down_blocks\.0\.resnets"):
        read_echomimic_folder(folder)
    torch.save(motion, folder / "motion_module.pth")
    torch.save(motion, folder / "reference_unet.pth")  # another file in its place: say what it is
    with pytest.raises(WeightFileError, match=r"reference_unet\.pth does not have .* The file holds an? .*motion mod"):
        read_echomimic_folder(folder)
    torch.save(state, folder / "reference_unet.pth")

    face = torch.load(folder / "face_locator.pth", weights_only=True)
    torch.save({**face, "conv_in.weight": face["conv_in.weight"].repeat(1, 3, 1, 1)}, folder / "face_locator.pth")
    with pytest.raises(WeightFileError, match=r"3 input channels: it is the pose variant's face locator"):
        read_echomimic_folder(folder)
    torch.save(face, folder / "face_locator.pth")

    checkpoint = torch.load(folder / "audio_processor" / "whisper_tiny.pt", weights_only=True)
    checkpoint["dims"]["n_audio_layer"] = 4
    torch.save(checkpoint, folder / "audio_processor" / "whisper_tiny.pt")
    with pytest.raises(ValueError, match=r"whisper_tiny\.pt: wrong whisper dimensions: n_audio_layer 4 in dims"):
        read_echomimic_folder(folder)


def test_echomimic_denoising_unet_against_the_config(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)
    config_path = folder / "sd-image-variations-diffusers" / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "layers_per_block": 2}))  # not what the weights were made with
    with pytest.raises(WeightFileError, match=r"denoising_unet\.pth does not have EchoMimic's denoising unet layout.*"
                                              r"\d+ missing keys: down_blocks\.0\.attentions\.1\..*"
                                              r"Most of its keys are EchoMimic's, so sd-image-variations-diffusers/"
                                              r"unet/config\.json may not be the config"):
        read_echomimic_folder(folder)
    config_path.write_text(json.dumps({**config, "_class_name": "AutoencoderKL"}))
    with pytest.raises(WeightFileError, match=r"describes a AutoencoderKL, not a UNet2DConditionModel"):
        read_echomimic_folder(folder)


def hallo_net() -> dict:
    return {"reference_unet.conv_in.weight": torch.zeros(8, 4, 3, 3),
            "denoising_unet.conv_in.weight": torch.zeros(8, 4, 3, 3),
            "face_locator.conv_in.weight": torch.zeros(4, 3, 3, 3), "imageproj.proj.weight": torch.zeros(8, 8),
            "audioproj.proj1.weight": torch.zeros(8, 8)}


def test_echomimic_refuses_other_family_folders(tmp_path):
    hallo = tmp_path / "pretrained_models"
    (hallo / "hallo").mkdir(parents=True)
    torch.save(hallo_net(), hallo / "hallo" / "net.pth")
    (hallo / "motion_module").mkdir()
    with pytest.raises(WeightFileError, match=r"not an EchoMimic pretrained_weights folder: it is Hallo's "
                                              r"pretrained_models folder .*Hallo loader"):
        read_echomimic_folder(hallo)

    emo = tmp_path / "emo"
    emo.mkdir()
    checkpoint = emo / "emo.safetensors"
    save_file({"reference_net.conv_in.weight": torch.zeros(2), "backbone.conv_in.weight": torch.zeros(2)},
              str(checkpoint), metadata={"format": "emo-checkpoint"})
    with pytest.raises(WeightFileError, match=r"needs its pretrained_weights folder, not a file: .* an EMO checkpoint"):
        read_echomimic_folder(checkpoint)
    with pytest.raises(WeightFileError, match=r"a folder holding an EMO checkpoint \(emo\.safetensors\)"):
        read_echomimic_folder(emo)

    v2 = tmp_path / "v2"
    (v2 / "audio_processor").mkdir(parents=True)
    torch.save({"conv_in.weight": torch.zeros(1)}, v2 / "pose_encoder.pth")
    with pytest.raises(WeightFileError, match=r"EchoMimic V2's pretrained_weights .* not supported"):
        read_echomimic_folder(v2)

    with pytest.raises(FileNotFoundError, match=r"EchoMimic folder .*nowhere does not exist"):
        read_echomimic_folder(tmp_path / "nowhere")


def test_echomimic_refuses_another_familys_file_under_an_echomimic_name(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)  # Hallo's net.pth renamed into EchoMimic's place
    torch.save(hallo_net(), folder / "denoising_unet.pth")
    with pytest.raises(WeightFileError, match=r"denoising_unet\.pth is Hallo's net\.pth .*not EchoMimic's denoising"):
        read_echomimic_folder(folder)


def test_echomimic_pth_files_are_read_without_running_code(pretrained, tmp_path):
    folder = copy(pretrained, tmp_path)
    torch.save({"conv_in.weight": torch.zeros(1), "note": NotATensor()}, folder / "face_locator.pth")
    with pytest.raises(WeightFileError, match=r"face_locator\.pth holds Python objects besides tensors"):
        read_echomimic_folder(folder)


class NotATensor:
    """Any Python object a weights-only load must refuse."""
