"""EchoMimic's released weights -> a model (and a checkpoint).

A user's unchanged `pretrained_weights` folder (read and checked by `files.read_echomimic_folder`)
maps onto `EMOModel` by prefix:

    reference_unet.pth                -> reference_net.*   (SD1.5 keys without attn2/norm2; the
                                                            output layers it lacks keep their
                                                            initial values, unused)
    denoising_unet[_acc].pth          -> backbone.*        (SD1.5 keys + motion modules, attn2
                                                            to 384-wide whisper tokens)
    face_locator.pth                  -> face_locator.*
    audio_processor/whisper_tiny.pt   -> audio_encoder.*   (the whisper encoder, no ln_post)
    sd-vae-ft-mse/                    -> vae.*

`motion_module[_acc].pth` holds a subset of the denoising UNet's keys with the same names; EchoMimic
overwrites it with `denoising_unet.pth`, so its values are never used (it is checked, not loaded).
The motion modules' head count is not in the files: 8, from EchoMimic's
configs/inference/inference_v2.yaml (`motion_module_kwargs.num_attention_heads`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import torch

from ...checkpoints import parse_dtype
from ...config import EMOConfig, FaceLocatorConfig, InferenceDefaults, TemporalConfig, UNetConfig
from ...keys import mismatch
from ...model import EMOModel
from ...weights.assemble import initialise_new_layers
from ...weights.components import load_components
from ...weights.files import read_folder_config
from ...weights.layout import put
from ...schedulers import SD15_ZERO_SNR_V_PREDICTION
from .files import AUDIO_WIDTH, MOTION_MAX_LEN, read_echomimic_folder
from .options import EchoMimicOptions
from .whisper import WhisperDims, encoder_state, read_whisper_checkpoint

logger = logging.getLogger(__name__)

PREFIXES = {"reference_unet": "reference_net.", "denoising_unet": "backbone.", "face_locator": "face_locator.",
            "whisper": "audio_encoder."}
MOTION_HEADS = 8  # configs/inference/inference_v2.yaml

# configs/inference/inference_v2.yaml's noise_scheduler_kwargs, with DDIM (infer_audio2vid*.py).
ECHOMIMIC_SCHEDULER = SD15_ZERO_SNR_V_PREDICTION

# What infer_audio2vid.py (V1) and infer_audio2vid_acc.py (acc) run with: 512x512, 24 fps, windows
# of 12 frames overlapping by 3 (frames_per_clip / motion_frames here), 30 steps at cfg 2.5 / 6
# steps at cfg 1.0.
ECHOMIMIC_DEFAULTS = {
    "v1": dict(size=512, fps=24.0, frames_per_clip=12, motion_frames=3, steps=30, guidance_scale=2.5, speed=0.0),
    "acc": dict(size=512, fps=24.0, frames_per_clip=12, motion_frames=3, steps=6, guidance_scale=1.0, speed=0.0),
}


def echomimic_config(unet: Mapping, *, face_locator_channels, whisper: Mapping, vae: Mapping, variant: str = "v1",
                     motion_heads: int = MOTION_HEADS, motion_max_len: int = MOTION_MAX_LEN,
                     name: str | None = None) -> EMOConfig:
    """An EMOConfig for an EchoMimic model: unet is the SD UNet config the folder ships
    (`sd-image-variations-diffusers/unet/config.json`; `attention_head_dim` = heads, as SD1.5),
    whisper the encoder's dims, vae the AutoencoderKL config."""
    levels = tuple("CrossAttn" in t for t in unet["down_block_types"])
    return EMOConfig(
        unet=UNetConfig(
            in_channels=unet.get("in_channels", 4), out_channels=unet.get("out_channels", 4),
            block_out_channels=tuple(unet["block_out_channels"]), attention_levels=levels,
            layers_per_block=unet["layers_per_block"], num_attention_heads=unet["attention_head_dim"],
            cross_attention_dim=AUDIO_WIDTH, norm_num_groups=unet["norm_num_groups"],
            norm_eps=unet.get("norm_eps", 1e-5), flip_sin_to_cos=unet.get("flip_sin_to_cos", True),
            freq_shift=unet.get("freq_shift", 0)),
        # EchoMimic's motion modules use GroupNorm with 32 groups whatever the UNet uses.
        temporal=TemporalConfig(num_attention_heads=motion_heads, num_transformer_blocks=1,
                                max_frames=motion_max_len, norm_num_groups=32),
        speed=None,
        face_locator=FaceLocatorConfig(conditioning_channels=1, block_out_channels=tuple(face_locator_channels)),
        vae={k: v for k, v in vae.items() if not k.startswith("_")},
        scheduler=dict(ECHOMIMIC_SCHEDULER),
        defaults=InferenceDefaults(**ECHOMIMIC_DEFAULTS[variant]),
        name=name or f"echomimic-{variant}",
        family="echomimic",
        family_options=EchoMimicOptions(variant=variant, whisper=dict(whisper)).to_dict(),
    )


# Parts of the model that EchoMimic's files never hold.
NOT_IN_ECHOMIMIC = ("reference_net.conv_norm_out.", "reference_net.conv_out.", "vae.")


def build_echomimic_model(states: Mapping[str, Mapping[str, torch.Tensor]], config: EMOConfig, *, vae=None,
                          seed: int = 0, dtype: torch.dtype | str | None = None) -> EMOModel:
    """An EMOModel holding EchoMimic's weights. states: role -> state dict for "reference_unet",
    "denoising_unet", "face_locator" (the released files' keys) and "whisper" (the encoder's
    tensors, keys without `encoder.`); vae: the sd-vae-ft-mse folder or file (None: random, for
    tests only). Loaded strictly: a key that fits nowhere, or a missing one, is an error."""
    converted = {PREFIXES[role] + key: tensor for role, state in states.items() for key, tensor in state.items()}
    with torch.device("meta"):
        model = EMOModel(config)
    dtype = parse_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    problems = mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()},
                        {k: tuple(v.shape) for k, v in converted.items()},
                        may_be_missing=lambda key: key.startswith(NOT_IN_ECHOMIMIC))
    if problems:
        raise ValueError(f"EchoMimic conversion: the weights do not fit the configured model ({problems}).")
    put(model, converted)
    if vae is not None:
        load_components(model, vae=vae)
    else:
        from diffusers import AutoencoderKL

        logger.warning("EchoMimic conversion: no VAE given; using a random initialisation")
        with torch.device("cpu"):
            put(model, {f"vae.{k}": v for k, v in AutoencoderKL(**config.vae).state_dict().items()})
    initialise_new_layers(model, seed=seed)
    return model.eval()


def load_echomimic_folder(folder, *, variant: str | None = None, dtype: torch.dtype | str | None = None,
                          motion_heads: int = MOTION_HEADS) -> EMOModel:
    """A user's unchanged EchoMimic `pretrained_weights` folder -> the model (v1 when its files
    are there, else acc; or the variant asked for). Every file is checked first."""
    inventory = read_echomimic_folder(folder, variant)
    _, vae_config = read_folder_config(inventory.paths["vae"], "EchoMimic VAE", ("_class_name", "AutoencoderKL"),
                                       "an AutoencoderKL", "copy sd-vae-ft-mse from EchoMimic's release")
    whisper = read_whisper_checkpoint(inventory.paths["whisper"])
    config = echomimic_config(inventory.unet_config, face_locator_channels=inventory.face_locator_channels,
                              whisper=dataclasses.asdict(WhisperDims.from_checkpoint(whisper["dims"], "whisper_tiny.pt")),
                              vae=vae_config, variant=inventory.variant, motion_heads=motion_heads)
    states = {role: {k: inventory.weights(role)[k] for k in inventory.weights(role)}
              for role in ("reference_unet", "denoising_unet", "face_locator")}
    states["whisper"] = encoder_state(whisper["model_state_dict"], str(inventory.paths["whisper"]))
    return build_echomimic_model(states, config, vae=inventory.paths["vae"], dtype=dtype)
