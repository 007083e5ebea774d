"""EchoMimic parity fixtures (shared/fixtures/echomimic_parity or $EMO_ECHOMIMIC_FIXTURES), and a
fake `pretrained_weights/` folder made from one: the fixture's tensors written under the real file
names, so that the folder reader is tested on EchoMimic's own layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import SHARED, discover

FIXTURE_DIR = Path(os.environ.get("EMO_ECHOMIMIC_FIXTURES", SHARED / "fixtures" / "echomimic_parity"))
WEIGHT_KEYS = SHARED / "fixtures" / "weight_keys"


def fixture_files() -> list[Path]:
    """Every fixture `.safetensors` (each with its `.json` beside it)."""
    return discover(FIXTURE_DIR, "*.safetensors")


def read_fixture(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(str(path)), json.loads(Path(path).with_suffix(".json").read_text())


def part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under `prefix.`, with the prefix removed (the released file's keys)."""
    return {k[len(prefix) + 1:]: v.contiguous() for k, v in tensors.items() if k.startswith(prefix + ".")}


def whisper_checkpoint(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The openai whisper checkpoint the fixture's whisper weights came from."""
    return {"dims": dict(meta["modules"]["whisper"]["dims"]), "model_state_dict": part(tensors, "whisper")}


def write_vae_folder(folder: Path) -> Path:
    """A tiny but genuine diffusers AutoencoderKL folder (config.json + safetensors)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, layers_per_block=1, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    vae.save_pretrained(folder, safe_serialization=True)
    return folder


def make_pretrained_weights(fixture: Path, folder: Path, variants=("v1",), vae: Path | None = None) -> Path:
    """Write the fixture as EchoMimic's `pretrained_weights/` folder.

    denoising_unet[_acc].pth / motion_module[_acc].pth (the motion subset), reference_unet.pth,
    face_locator.pth, audio_processor/whisper_tiny.pt ({'dims', 'model_state_dict'}),
    sd-vae-ft-mse/ (a tiny VAE, or a copy of `vae`), sd-image-variations-diffusers/unet/config.json.
    """
    tensors, meta = read_fixture(fixture)
    folder.mkdir(parents=True, exist_ok=True)
    denoising = part(tensors, "denoising_unet")
    motion = {k: v for k, v in denoising.items() if ".motion_modules." in k}
    suffix = {"v1": "", "acc": "_acc"}
    for variant in variants:
        torch.save(denoising, folder / f"denoising_unet{suffix[variant]}.pth")
        torch.save(motion, folder / f"motion_module{suffix[variant]}.pth")
    torch.save(part(tensors, "reference_unet"), folder / "reference_unet.pth")
    torch.save(part(tensors, "face_locator"), folder / "face_locator.pth")
    (folder / "audio_processor").mkdir(exist_ok=True)
    torch.save(whisper_checkpoint(tensors, meta), folder / "audio_processor" / "whisper_tiny.pt")
    if vae is None:
        write_vae_folder(folder / "sd-vae-ft-mse")
    else:
        (folder / "sd-vae-ft-mse").mkdir()
        for file in vae.iterdir():
            (folder / "sd-vae-ft-mse" / file.name).write_bytes(file.read_bytes())
    unet = folder / "sd-image-variations-diffusers" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(meta["modules"]["denoising_unet"]["base_unet_config"], indent=2))
    return folder


def motion_heads(meta: dict) -> int:
    """The motion modules' head count of a fixture's model (not in the released files)."""
    return meta["modules"]["denoising_unet"]["unet_additional_kwargs"]["motion_module_kwargs"]["num_attention_heads"]


def make_tiny_echomimic_folder(folder: Path, variants=("v1", "acc")) -> tuple[Path, dict]:
    """A runnable tiny `pretrained_weights/` folder from the first fixture: its weights under the
    released names, and a random seeded VAE of the fixture's own (8x, 4-level) layout, so the
    face locator's 8x downsampling meets the latents. Returns (folder, the fixture's json); calls
    `missing_fixture` when there is no fixture."""
    from diffusers import AutoencoderKL

    from tests.helpers import missing_fixture

    files = fixture_files()
    if not files:
        missing_fixture("EchoMimic parity fixtures (echomimic_parity/*.safetensors)")
    _, meta = read_fixture(files[0])
    vae = folder.parent / f"{folder.name}_vae"
    torch.manual_seed(1)
    AutoencoderKL(**meta["modules"]["vae_for_crosscheck_only"]["from_config"]).save_pretrained(vae)
    return make_pretrained_weights(files[0], folder, variants=variants, vae=vae), meta
