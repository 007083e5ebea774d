"""The SD VAE (`AutoencoderKL`) in diffusers' key names, from any of the layouts users have.

Accepted, as a file in `models/vae/` or inside a bigger file:
- original LDM layout (`encoder.down.0.block.0...`, attention `q/k/v/proj_out` stored as 1x1
  convolutions [C, C, 1, 1]), bare (vae-ft-mse-840000-ema-pruned) or under `first_stage_model.`
  in a full SD checkpoint; converted with diffusers' `convert_ldm_vae_checkpoint`;
- diffusers layout with the current attention names (`to_q/to_k/to_v/to_out.0`, linear [C, C])
  or the old ones (`query/key/value/proj_attn`, as in sd-vae-ft-mse's first diffusers upload),
  renamed with diffusers' own `_fix_state_dict_keys_on_load`;
- a diffusers folder (`config.json` + `diffusion_pytorch_model.*`), or a pipeline root with `vae/`.
Training leftovers of VAE checkpoints (`loss.*` discriminator, `model_ema.*`) are skipped.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from ..config import EMOConfig
from . import layout
from .files import WeightFile, WeightFileError, open_folder_weights, open_weights, read_folder_config, existing_path
from .identify import describe_weights
from .layout import Plan, Shape

logger = logging.getLogger(__name__)

_SKIPPED_PREFIXES = ("loss.", "model_ema.")  # training-only parts of LDM autoencoder checkpoints
_ATTENTION_WEIGHT = re.compile(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$")
_VAE_FIELDS = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": None,
               "layers_per_block": 2, "norm_num_groups": 32, "down_block_types": None,
               "up_block_types": None, "scaling_factor": 0.18215}


def expected_vae_text(config: EMOConfig) -> str:
    vae = config.vae
    return (f"an SD1.5 VAE (AutoencoderKL, widths {list(vae['block_out_channels'])}, "
            f"{vae['latent_channels']} latent channels, scaling factor {vae['scaling_factor']})")


def _meta_autoencoder(config: EMOConfig):
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**config.vae)


def _plan_keys(what: str, source: WeightFile, prefix: str, config: EMOConfig) -> Plan:
    """Plan the VAE from the keys of `source` under `prefix` (in either layout)."""
    names = [k for k in source if k.startswith(prefix)]
    skipped = [k for k in names if k[len(prefix):].startswith(_SKIPPED_PREFIXES)]
    names = [k for k in names if k not in set(skipped)]
    view = {k[len(prefix):]: t for k, t in source.meta_view(names).items()}
    path = source.path
    notes = [f"{path.name}: skipped {len(skipped)} training-only tensors (loss.*, model_ema.*)"] if skipped else []
    if "encoder.down.0.block.0.conv1.weight" in view:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        origins, shapes = layout.trace(view, lambda ckpt: convert_ldm_vae_checkpoint(ckpt, dict(config.vae)))
    elif "encoder.down_blocks.0.resnets.0.conv1.weight" in view:
        fixer = _meta_autoencoder(config)

        def convert(ckpt):
            # diffusers renames the attention of old files (query/key/value/proj_attn) itself.
            return fixer._fix_state_dict_keys_on_load(ckpt)

        origins, shapes = layout.trace(view, convert)
        for key, shape in shapes.items():  # attention weights some exporters keep as 1x1 convs
            if _ATTENTION_WEIGHT.search(key) and len(shape) == 4 and shape[2:] == (1, 1):
                shapes[key] = shape[:2]
    else:
        raise WeightFileError(f"{what}: no VAE weights in {path}; it looks like "
                              f"{describe_weights(source.meta_view())}. EMO needs {expected_vae_text(config)}.")
    widths = [shapes[k][0] for i in range(8) if (k := f"encoder.down_blocks.{i}.resnets.0.conv1.weight") in shapes]
    used = set(origins.values())
    unused = {prefix + k for k in view if k not in used}
    origins = {k: prefix + v for k, v in origins.items()}
    return Plan(what, path, source, origins, shapes, unused=unused, notes=notes,
                found=f"a VAE with widths {widths}" if widths else "")


def plan_vae_in_checkpoint(path: Path, source: WeightFile, config: EMOConfig, expected: dict[str, Shape],
                           prefix: str) -> Plan:
    """The VAE stored under `prefix` inside a bigger file (an SD checkpoint's first_stage_model)."""
    plan = _plan_keys("VAE", source, prefix, config)
    layout.check(plan, expected, expected_text=expected_vae_text(config))
    return plan


def plan_vae_path(path: str | os.PathLike | WeightFile, config: EMOConfig, expected: dict[str, Shape]) -> Plan:
    """Plan the VAE from a file (any layout; a full SD checkpoint works too) or a diffusers folder."""
    what = "VAE"
    if isinstance(path, WeightFile):
        source = path
    else:
        path = existing_path(path, what, "give a VAE file (e.g. "
                             "vae-ft-mse-840000-ema-pruned.safetensors) or a diffusers vae folder.")
        if path.is_dir():
            folder = path / "vae" if (path / "vae").is_dir() else path
            cfg_path, found = read_folder_config(folder, what, ("_class_name", "AutoencoderKL"), "an AutoencoderKL",
                                                 "give a diffusers VAE folder or a VAE file.")
            layout.check_config(found, config.vae, _VAE_FIELDS, what=what, path=cfg_path,
                                hint=f"EMO needs {expected_vae_text(config)}; the SDXL VAE has other latents "
                                     "(scaling factor 0.13025) even though its shapes are the same.")
            source = open_folder_weights(folder, ("diffusion_pytorch_model",), what)
        else:
            source = open_weights(path, what)
    keys = list(source)
    prefix = ""
    if any(k.startswith("first_stage_model.") for k in keys):
        prefix = "first_stage_model."
    elif any(k.startswith("vae.encoder.") for k in keys):
        prefix = "vae."
    plan = _plan_keys(what, source, prefix, config)
    if prefix:
        plan.notes.append(f"{source.path.name}: using the VAE stored under '{prefix}'")
    plan.found = plan.found or describe_weights(source.meta_view())
    layout.check(plan, expected, expected_text=expected_vae_text(config))
    return plan
