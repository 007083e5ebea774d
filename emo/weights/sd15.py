"""Stable Diffusion 1.5 UNet (and the VAE inside the same file) in EMO's key names.

Accepted:
- a single-file checkpoint as ComfyUI's `models/checkpoints/` holds it (original LDM layout:
  `model.diffusion_model.*` UNet, `first_stage_model.*` VAE, `cond_stage_model.*` CLIP, which
  EMO does not use), `.safetensors` or a `.ckpt` pickle; with `ema=True` the `model_ema.*` copy
  of the UNet of full training checkpoints (v1-5-pruned.ckpt) is used instead;
- a UNet-only file (LDM layout without the prefix, or diffusers layout), as in `models/unet/`;
- a diffusers folder (the pipeline root with `unet/` and `vae/`, or the `unet/` folder itself).

LDM names are converted with diffusers' own `convert_ldm_unet_checkpoint`, given a config made
from EMO's `UNetConfig` (nothing is fetched). EMO's UNet keys equal diffusers'
`UNet2DConditionModel` keys, so one converted UNet fills both the ReferenceNet and the
backbone's spatial layers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import EMOConfig, UNetConfig
from . import layout
from .files import WeightFile, WeightFileError, open_folder_weights, open_weights, read_folder_config, existing_path
from .identify import describe_weights, diffusers_model_type
from .layout import Plan, Shape
from .vae import plan_vae_in_checkpoint, plan_vae_path

logger = logging.getLogger(__name__)

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_EMA_PREFIX = "model_ema."
_EMA_BOOKKEEPING = {"model_ema.decay", "model_ema.num_updates"}
_SD1_FAMILIES = {None, "v1"}
UNET = "SD1.5 UNet"


def diffusers_unet_config(cfg: UNetConfig) -> dict:
    """The diffusers `UNet2DConditionModel` config of EMO's UNet (for sd15 it equals
    runwayml's unet/config.json in every field that shapes a tensor)."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels)]
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": list(cfg.block_out_channels),
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": cfg.layers_per_block,
        "attention_head_dim": cfg.num_attention_heads,
        "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups,
        "norm_eps": cfg.norm_eps,
        "flip_sin_to_cos": cfg.flip_sin_to_cos,
        "freq_shift": cfg.freq_shift,
        "use_linear_projection": False,
        "transformer_layers_per_block": 1,
    }


def expected_unet_text(config: EMOConfig) -> str:
    cfg = config.unet
    return (f"a Stable Diffusion 1.5-layout UNet ({config.name}: {cfg.in_channels} input channels, "
            f"widths {list(cfg.block_out_channels)}, cross-attention width {cfg.cross_attention_dim})")


# Fields of a diffusers unet/config.json that must agree, with their diffusers defaults.
_UNET_FIELDS = {"in_channels": 4, "out_channels": 4, "block_out_channels": None, "down_block_types": None,
                "up_block_types": None, "layers_per_block": 2, "cross_attention_dim": 1280,
                "attention_head_dim": 8, "norm_num_groups": 32, "use_linear_projection": False,
                "transformer_layers_per_block": 1}


def _unet_from_ldm(path: Path, source: WeightFile, keys: list[str], config: EMOConfig, ema: bool) -> Plan:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    has_ema = sum(k.startswith(LDM_EMA_PREFIX) for k in keys) > 100
    notes = []
    if ema and not has_ema:
        notes.append(f"{path.name} holds no EMA copy of the UNet; using its only UNet weights")
    elif has_ema and not ema:
        notes.append(f"{path.name} also holds EMA weights of the UNet; using the non-EMA ones "
                     "(sd15_ema=True or --sd15-ema uses the EMA ones)")
    use_ema = ema and has_ema
    wanted = [k for k in keys if k.startswith(LDM_UNET_PREFIX)
              or (use_ema and k.startswith(LDM_EMA_PREFIX) and k not in _EMA_BOOKKEEPING)]
    view = source.meta_view(wanted)
    convert_config = diffusers_unet_config(config.unet)
    try:
        origins, shapes = layout.trace(
            view, lambda ckpt: convert_ldm_unet_checkpoint(ckpt, convert_config, extract_ema=use_ema))
    except (KeyError, IndexError, ValueError, RuntimeError) as error:
        raise WeightFileError(f"{UNET}: {path} has an LDM UNet that diffusers' converter cannot read "
                              f"as SD1.5 ({type(error).__name__}: {error}).") from error
    namespace = LDM_EMA_PREFIX if use_ema else LDM_UNET_PREFIX
    used = set(origins.values())
    unused = {k for k in wanted if k.startswith(namespace) and k not in used}
    return Plan(UNET, path, source, origins, shapes, unused=unused, notes=notes)


def plan_sd15(path: str | os.PathLike | WeightFile, config: EMOConfig, unet_expected: dict[str, Shape],
              vae_expected: dict[str, Shape] | None = None, *, ema: bool = False) -> tuple[Plan, Plan | None]:
    """Plan the UNet (diffusers names) and, when `vae_expected` is given and the source has one,
    the VAE. Everything is checked against the expected shapes; no tensor data is read yet."""
    what = "SD1.5 checkpoint"
    text = expected_unet_text(config)
    if isinstance(path, WeightFile):
        source, path = path, path.path
    else:
        path = existing_path(path, what, "give a Stable Diffusion 1.5 "
                             "checkpoint file (.safetensors/.ckpt) or a diffusers folder.")
        if path.is_dir():
            unet_plan, vae_dir = _plan_diffusers_folder(path, config, what)
            layout.check(unet_plan, unet_expected, expected_text=text)
            vae_plan = None
            if vae_expected is not None and vae_dir is not None:
                vae_plan = plan_vae_path(vae_dir, config, vae_expected)
            return unet_plan, vae_plan
        source = open_weights(path, what)
    keys = list(source)
    view = source.meta_view()
    found = describe_weights(view)
    family = diffusers_model_type(view)
    if family not in _SD1_FAMILIES:
        raise WeightFileError(f"{what}: {path} looks like {found}; EMO needs {text}, e.g. "
                              "v1-5-pruned-emaonly.safetensors or another SD1.5 fine-tune.")
    if any(k.startswith(LDM_UNET_PREFIX) for k in keys):
        unet_plan = _unet_from_ldm(path, source, keys, config, ema)
        others = sorted({k.split(".")[0] for k in keys
                         if not k.startswith((LDM_UNET_PREFIX, LDM_VAE_PREFIX, LDM_EMA_PREFIX))})
        if others:  # the text encoder, the noise schedule, ...: EMO has no use for them
            unet_plan.notes.append(f"{path.name}: not used by EMO: {', '.join(f'{o}*' for o in others[:6])}")
    elif "input_blocks.0.0.weight" in source:  # a bare LDM UNet (models/unet/)
        prefixed = source.with_prefix(LDM_UNET_PREFIX)
        unet_plan = _unet_from_ldm(path, prefixed, list(prefixed), config, ema=False)
    elif "conv_in.weight" in source and "time_embedding.linear_1.weight" in source:  # diffusers UNet file
        origins, shapes, unused = layout.renamed(view, lambda k: k, what=what, path=path)
        unet_plan = Plan(UNET, path, source, origins, shapes, unused)
    else:
        raise WeightFileError(f"{what}: no SD1.5 UNet weights in {path}; it looks like {found}. "
                              f"EMO needs {text}.")
    unet_plan.found = found + _widths(unet_plan.shapes)
    layout.check(unet_plan, unet_expected, expected_text=text)
    vae_plan = None
    if vae_expected is not None and any(k.startswith(LDM_VAE_PREFIX) for k in keys):
        vae_plan = plan_vae_in_checkpoint(path, source, config, vae_expected, LDM_VAE_PREFIX)
    return unet_plan, vae_plan


def _widths(shapes: dict) -> str:
    """', widths [...]' of a UNet in diffusers names (from its first resnet of each level)."""
    widths = [shapes[k][0] for i in range(8) if (k := f"down_blocks.{i}.resnets.0.conv1.weight") in shapes]
    return f", widths {widths}" if widths else ""


def _plan_diffusers_folder(path: Path, config: EMOConfig, what: str) -> tuple[Plan, Path | None]:
    if (path / "unet").is_dir():
        unet_dir, vae_dir = path / "unet", (path / "vae" if (path / "vae").is_dir() else None)
    elif (path / "config.json").is_file():
        unet_dir, vae_dir = path, None
    else:
        raise FileNotFoundError(f"{what}: {path} is a folder without unet/ or config.json; give a "
                                "diffusers Stable Diffusion folder (with unet/ and vae/) or a checkpoint file.")
    cfg_path, found = read_folder_config(unet_dir, what, ("_class_name", "UNet2DConditionModel"),
                                         "a UNet2DConditionModel", "a diffusers UNet folder has one.")
    layout.check_config(found, diffusers_unet_config(config.unet), _UNET_FIELDS, what=what, path=cfg_path,
                        hint=f"EMO needs {expected_unet_text(config)}.")
    source = open_folder_weights(unet_dir, ("diffusion_pytorch_model",), what)
    view = source.meta_view()
    origins, shapes, unused = layout.renamed(view, lambda k: k, what=what, path=unet_dir)
    plan = Plan(UNET, unet_dir, source, origins, shapes, unused, found=describe_weights(view) + _widths(shapes))
    return plan, vae_dir
