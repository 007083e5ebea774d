"""A tiny Hallo `pretrained_models` folder for tests, laid out as Hallo's README says: fixture B's
random Hallo weights as hallo/net.pth, a tiny VAE and wav2vec2 as diffusers / Hugging Face folders,
the UNet config, the face-analysis fixture's tiny antelopev2-shaped models and the tiny vocal model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.emo.faces.face_fixtures import FIXTURES as FACE_FIXTURES, fixture_folders
from tests.emo.weights import formats
from tests.helpers import REPO, missing_fixture

PARITY = REPO / "tests" / "fixtures" / "hallo_parity"
VOCALS = REPO / "tests" / "fixtures" / "vocal_separation"
PHOTO = "astronaut.png"  # the face fixture's photo with faces (square: crop "center" keeps it whole)


def face_fixture() -> Path:
    """The first face-analysis fixture folder (tiny onnx models + photos), or a skip/fail."""
    folders = fixture_folders()
    if not folders:
        missing_fixture(f"face-analysis fixtures (fixture_*/face_analysis_*.json) in {FACE_FIXTURES}")
    return folders[0]


def build_hallo_folder(root: Path, *, fixture: str = "hallo_fixture_B", face_analysis: bool = True,
                       vocals: bool = True, arcface_input: bool = False) -> tuple[Path, dict]:
    """Write the folder; returns (root, the parity fixture as tests.emo.weights.formats reads it).
    arcface_input: the identity projection takes the 512 values the face models give (the
    parity fixtures' take fewer), with new random weights."""
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    data = formats.read_hallo_fixture(PARITY / f"{fixture}.safetensors")
    config = data["config"]
    weights = dict(data["weights"])
    if arcface_input:
        out = weights["imageproj.proj.weight"].shape[0]
        weights["imageproj.proj.weight"] = torch.randn(out, 512, generator=torch.Generator().manual_seed(5)) / 512 ** 0.5
    (root / "hallo").mkdir(parents=True)
    formats.save_pickle(weights, root / "hallo" / "net.pth")
    torch.manual_seed(0)
    AutoencoderKL(**config.vae).save_pretrained(root / "sd-vae-ft-mse")
    Wav2Vec2Model(Wav2Vec2Config(**config.audio.wav2vec2)).save_pretrained(root / "wav2vec" / "wav2vec2-base-960h")
    unet = dict(data["meta"]["modules"]["denoising_unet"]["from_config"])
    unet["_class_name"] = "UNet2DConditionModel"  # as in stable-diffusion-v1-5/unet/config.json
    unet["down_block_types"] = [t.replace("3D", "2D") for t in unet["down_block_types"]]
    unet["up_block_types"] = [t.replace("3D", "2D") for t in unet["up_block_types"]]
    (root / "stable-diffusion-v1-5" / "unet").mkdir(parents=True)
    (root / "stable-diffusion-v1-5" / "unet" / "config.json").write_text(json.dumps(unet))
    (root / "motion_module").mkdir()
    if face_analysis:
        shutil.copytree(face_fixture() / "face_analysis" / "models", root / "face_analysis" / "models")
    if vocals:
        (root / "audio_separator").mkdir()
        shutil.copy(VOCALS / "tiny_Kim_Vocal_2.onnx", root / "audio_separator" / "Kim_Vocal_2.onnx")
    return root, data


def temporal_heads(data: dict) -> int:
    return data["config"].temporal.num_attention_heads
