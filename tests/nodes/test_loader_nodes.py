"""EMOComponentLoader and EMOHalloLoader on tiny files laid out as ComfyUI keeps them
(models/checkpoints, vae, audio_encoders, animatediff_models, hallo), listed through the
services' folder fallbacks, and their error messages."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest
import torch

from nodes import comfy_services as services
from nodes.audio import EMOAudioEncode
from nodes.model import (
    FROM_HALLO_DIR,
    NO_MOTION_MODULE,
    VAE_FROM_CHECKPOINT,
    EMOComponentLoader,
    EMOHalloLoader,
    EMOModelHandle,
    build_from_components,
    load_hallo,
)
from nodes.reference import EMOLoadReference
from nodes.sampler import EMOSampler
from tests.emo.weights import formats
from tests.helpers import SHARED, missing_fixture, portrait

COMPONENT_KINDS = ("checkpoints", "vae", "audio_encoders", "animatediff_models")
HALLO_FIXTURES = sorted(Path(os.environ.get("EMO_HALLO_FIXTURES", SHARED / "fixtures" / "hallo_parity"))
                        .glob("*.safetensors"))


def use_folders(root: Path, kinds) -> None:
    for kind in kinds:
        services.set_model_folders(kind, root / kind)  # conftest resets them after each test


# ---- EMOComponentLoader ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def component_files(tmp_path_factory, tiny_model):
    """SD1.5 checkpoint (with VAE), a separate VAE, wav2vec2 as a Hugging Face folder and as one
    file (ComfyUI's audio_encoders style), an AnimateDiff motion module: all of the tiny model."""
    root = tmp_path_factory.mktemp("comfy_models")
    for kind in COMPONENT_KINDS:
        (root / kind).mkdir()
    formats.save_safetensors(formats.sd_checkpoint(tiny_model), root / "checkpoints" / "sd15-tiny.safetensors")
    vae = formats.vae_to_ldm(formats.part(tiny_model.state_dict(), "vae."), tiny_model.config)
    formats.save_safetensors(vae, root / "vae" / "vae-tiny.safetensors")
    ctc = formats.wav2vec2_ctc(tiny_model)
    ctc.save_pretrained(root / "audio_encoders" / "wav2vec2-tiny")
    formats.save_safetensors(ctc.state_dict(), root / "audio_encoders" / "wav2vec2-tiny.safetensors")
    formats.save_pickle(formats.motion_state(tiny_model), root / "animatediff_models" / "mm-tiny.ckpt")
    return root


@pytest.fixture
def components(component_files):
    use_folders(component_files, COMPONENT_KINDS)
    return component_files


def test_component_loader_lists_the_comfyui_folders(components):
    required = EMOComponentLoader.INPUT_TYPES()["required"]
    assert required["ckpt_name"][0] == ["sd15-tiny.safetensors"]
    assert required["vae_name"][0] == [VAE_FROM_CHECKPOINT, "vae-tiny.safetensors"]
    # The Hugging Face folder is one entry, not its config and weight files.
    assert required["wav2vec2_name"][0] == ["wav2vec2-tiny.safetensors", "wav2vec2-tiny/"]
    assert required["motion_module_name"][0] == [NO_MOTION_MODULE, "mm-tiny.ckpt"]
    assert required["seed"][1]["control_after_generate"] is False  # a new seed would rebuild the model


def test_component_loader_builds_a_model_from_the_files(components, tiny_model, voice, caplog):
    with caplog.at_level("WARNING"):
        handle = build_from_components("sd15-tiny.safetensors", VAE_FROM_CHECKPOINT, "wav2vec2-tiny/",
                                       NO_MOTION_MODULE, "auto", 0, preset="tiny")
    assert isinstance(handle, EMOModelHandle) and handle.dtype == torch.float32
    assert handle.load_device.type == "cpu" and not handle.model.training
    model = handle.model
    for got, source in ((model.reference_net.conv_in.weight, tiny_model.reference_net.conv_in.weight),
                        (model.backbone.conv_in.weight, tiny_model.reference_net.conv_in.weight),
                        (model.vae.decoder.conv_out.weight, tiny_model.vae.decoder.conv_out.weight),
                        (model.audio_encoder.feature_projection.projection.weight,
                         tiny_model.audio_encoder.feature_projection.projection.weight)):
        assert torch.equal(got, source)
    assert torch.count_nonzero(model.face_locator.conv_out.weight) == 0  # new, starts as a no-op
    assert not any(t.is_meta for t in model.state_dict().values())
    assert "freshly initialised" in caplog.text and "does not lip-sync" in caplog.text
    assert handle.info["mode"] == "assembled" and handle.info["sources"]["unet"].endswith("sd15-tiny.safetensors")
    # It is an EMO_MODEL like EMOModelLoader's: AudioEncode and EMOSampler take it.
    features = EMOAudioEncode().encode(voice, handle, 25.0)["result"][0]
    reference, _ = EMOLoadReference().prepare(portrait(64)[None], 64, "center")
    frames, fps = EMOSampler().sample(handle, reference, features, 0, 1, 1.0, "ddim", 12, 4,
                                      face_mask=torch.ones(1, 64, 64))["result"]
    assert frames.shape == (features.num_frames, 64, 64, 3) and fps == 25.0


def test_component_loader_with_vae_motion_module_and_single_file_wav2vec2(components, tiny_model):
    handle = build_from_components("sd15-tiny.safetensors", "vae-tiny.safetensors", "wav2vec2-tiny.safetensors",
                                   "mm-tiny.ckpt", "bf16", 7, preset="tiny")
    assert handle.dtype == handle.model.dtype == torch.bfloat16
    temporal = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"
    assert torch.equal(handle.model.backbone.state_dict()[temporal],
                       tiny_model.backbone.state_dict()[temporal].to(torch.bfloat16))
    assert torch.equal(handle.model.vae.decoder.conv_out.weight,
                       tiny_model.vae.decoder.conv_out.weight.to(torch.bfloat16))
    sources = handle.info["sources"]
    assert Path(sources["vae"]).name == "vae-tiny.safetensors"
    assert Path(sources["motion_module"]).name == "mm-tiny.ckpt"
    assert handle.info["seed"] == 7


def test_component_loader_node_builds_the_sd15_architecture(components):
    # The node itself builds full-size EMO: the tiny checkpoint is rejected before any data is read.
    with pytest.raises(ValueError, match=r"^EMO Build From SD1.5 Parts: SD1\.5 UNet: .*sd15-tiny\.safetensors does not fit; "
                                         r"expected .*\(emo-sd15"):
        EMOComponentLoader().load("sd15-tiny.safetensors", VAE_FROM_CHECKPOINT, "wav2vec2-tiny/",
                                  NO_MOTION_MODULE, "fp32", 0)


def test_component_loader_errors_name_the_node_and_the_folder(components):
    args = ["sd15-tiny.safetensors", VAE_FROM_CHECKPOINT, "wav2vec2-tiny/", NO_MOTION_MODULE]
    with pytest.raises(FileNotFoundError, match=r"^EMO Build From SD1.5 Parts: 'missing\.safetensors' not found in the "
                                                 r"checkpoints model folders \(.*checkpoints\)"):
        build_from_components("missing.safetensors", *args[1:], preset="tiny")
    with pytest.raises(FileNotFoundError, match=r"^EMO Build From SD1.5 Parts: 'gone/' not found in the audio_encoders "
                                                 r"model folders.*put the model folder there"):
        build_from_components(*args[:2], "gone/", args[3], preset="tiny")
    with pytest.raises(ValueError, match="^EMO Build From SD1.5 Parts: unknown precision 'fp8'"):
        build_from_components(*args, "fp8", preset="tiny")
    # A wav2vec2 file where the motion module goes: a wrong file, named.
    (components / "animatediff_models" / "wrong.safetensors").symlink_to(
        components / "audio_encoders" / "wav2vec2-tiny.safetensors")
    try:
        with pytest.raises(ValueError, match=r"^EMO Build From SD1.5 Parts: AnimateDiff motion module: no motion-module "
                                             r"weights in .*wrong\.safetensors; it looks like a wav2vec2"):
            build_from_components(*args[:3], "wrong.safetensors", preset="tiny")
    finally:
        (components / "animatediff_models" / "wrong.safetensors").unlink()


# ---- EMOHalloLoader ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hallo_files(tmp_path_factory):
    """Hallo's net.pth of the parity fixture's small model, a VAE file and a wav2vec2 folder
    (as tests/emo/weights/test_hallo.py writes them), plus a file that is not Hallo's."""
    if not HALLO_FIXTURES:
        missing_fixture("Hallo parity fixtures (shared/fixtures/hallo_parity or EMO_HALLO_FIXTURES)")
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    fixture = formats.read_hallo_fixture(HALLO_FIXTURES[0])
    config = fixture["config"]
    root = tmp_path_factory.mktemp("comfy_models")
    for kind in ("hallo", "vae", "audio_encoders"):
        (root / kind).mkdir()
    torch.manual_seed(3)
    vae = AutoencoderKL(**config.vae).state_dict()
    wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**config.audio.wav2vec2))
    wav2vec2.save_pretrained(root / "audio_encoders" / "wav2vec2-base-960h")
    formats.save_pickle(fixture["weights"], root / "hallo" / "net.pth")
    formats.save_safetensors(vae, root / "vae" / "sd-vae-ft-mse.safetensors")
    formats.save_safetensors(vae, root / "hallo" / "not-hallo.safetensors")
    return types.SimpleNamespace(root=root, config=config, weights=fixture["weights"], vae=vae)


@pytest.fixture
def hallo(hallo_files):
    use_folders(hallo_files.root, ("hallo", "vae", "audio_encoders"))
    return hallo_files


def test_hallo_loader_lists_the_comfyui_folders(hallo):
    required = EMOHalloLoader.INPUT_TYPES()["required"]
    assert required["net_name"][0] == [FROM_HALLO_DIR, "net.pth", "not-hallo.safetensors"]
    assert required["vae_name"][0] == [FROM_HALLO_DIR, "sd-vae-ft-mse.safetensors"]
    assert required["wav2vec2_name"][0] == [FROM_HALLO_DIR, "wav2vec2-base-960h/"]
    optional = EMOHalloLoader.INPUT_TYPES()["optional"]
    assert optional["hallo_dir"][0] == ["none"]  # no whole pretrained_models folder here
    assert optional["identity"][0] == ["on", "off"]


def test_hallo_loader_converts_the_files(hallo):
    # No face_analysis folder next to net.pth: identity on is an error that says where the files go.
    with pytest.raises(FileNotFoundError, match=r"^EMO Load Hallo: no face_analysis folder .*identity off"):
        load_hallo("net.pth", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", "auto", config=hallo.config)
    handle = load_hallo("net.pth", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", "auto", config=hallo.config,
                        identity="off")
    assert handle.model.hallo_identity.identity is False
    assert isinstance(handle, EMOModelHandle) and handle.dtype == torch.float32
    model = handle.model
    assert model.config.family == "hallo" and handle.defaults.first_motion_frames == "reference"  # Hallo mode
    assert torch.equal(model.backbone.conv_in.weight, hallo.weights["denoising_unet.conv_in.weight"])
    assert torch.equal(model.audio_projection.proj1.weight, hallo.weights["audioproj.proj1.weight"])
    assert torch.equal(model.vae.decoder.conv_out.weight, hallo.vae["decoder.conv_out.weight"])
    assert handle.info["mode"] == "hallo" and handle.name == "Hallo net.pth"


def test_hallo_loader_errors_name_the_node(hallo):
    with pytest.raises(FileNotFoundError, match=r"^EMO Load Hallo: 'gone\.pth' not found in the hallo model folders"):
        load_hallo("gone.pth", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", config=hallo.config)
    with pytest.raises(ValueError, match="^EMO Load Hallo: Hallo conversion: .* belong to none of Hallo's networks"):
        load_hallo("not-hallo.safetensors", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", config=hallo.config,
                   identity="off")
    with pytest.raises(ValueError, match="^EMO Load Hallo: unknown precision 'int8'"):
        load_hallo("net.pth", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", "int8")
    # The node itself converts with Hallo's released architecture (its wav2vec2 config from the
    # given folder): the small wav2vec2 and net.pth do not fit it.
    with pytest.raises(ValueError, match=r"^EMO Load Hallo: Hallo conversion: the audio projection reads 12 layers "
                                         r"x 768 .* gives 3 x 16; use the wav2vec2 model Hallo was trained with "
                                         r"\(pretrained_models/wav2vec/wav2vec2-base-960h\)"):
        EMOHalloLoader().load("net.pth", "sd-vae-ft-mse.safetensors", "wav2vec2-base-960h/", "fp16", identity="off")
