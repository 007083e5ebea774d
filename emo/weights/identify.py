"""What a weights file holds, told from its keys and shapes, for error messages.

"SD1.5 expected, found SDXL base" is more useful than 1,000 unexpected keys. The Stable
Diffusion family is named by diffusers' own detector (`infer_diffusers_model_type`, which looks at
marker keys and shapes); the other components EMO reads are recognised by their key layouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

logger = logging.getLogger(__name__)

# diffusers' model-type names -> words users know.
_DIFFUSERS_NAMES = {
    "v1": "a Stable Diffusion 1.x checkpoint",
    "v2": "a Stable Diffusion 2.x checkpoint (1024-wide OpenCLIP cross-attention)",
    "inpainting": "a Stable Diffusion 1.x inpainting checkpoint (9 input channels)",
    "inpainting_v2": "a Stable Diffusion 2.x inpainting checkpoint",
    "xl_base": "an SDXL base checkpoint",
    "xl_refiner": "an SDXL refiner checkpoint",
    "xl_inpaint": "an SDXL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 (SDXL-shaped) checkpoint",
    "upscale": "a Stable Diffusion x4 upscaler",
    "instruct-pix2pix": "an InstructPix2Pix checkpoint (8 input channels)",
    "controlnet": "an SD1.5 ControlNet",
    "animatediff_v1": "an AnimateDiff v1 motion module (mm_sd_v15)",
    "animatediff_v2": "an AnimateDiff v2 motion module (mm_sd_v15_v2)",
    "animatediff_v3": "an AnimateDiff v3 motion module",
    "animatediff_sdxl_beta": "an AnimateDiff SDXL motion module",
    "animatediff_scribble": "an AnimateDiff SparseCtrl scribble model",
    "animatediff_rgb": "an AnimateDiff SparseCtrl RGB model",
    "sd3": "a Stable Diffusion 3 checkpoint",
    "sd35_large": "a Stable Diffusion 3.5 Large checkpoint",
    "sd35_medium": "a Stable Diffusion 3.5 Medium checkpoint",
}


# Cross-attention width -> the family it belongs to (text encoder widths).
_CROSS_WIDTH = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL", 1280: "SDXL refiner"}


def _width(n: int) -> str:
    family = _CROSS_WIDTH.get(n)
    return f"cross-attention width {n}" + (f", as {family}" if family else "")


def _strip(keys, prefix: str) -> set[str]:
    return {k[len(prefix):] for k in keys if k.startswith(prefix)}


def diffusers_model_type(view: Mapping[str, torch.Tensor]) -> str | None:
    """diffusers' name for a single-file checkpoint's family, or None when it has no opinion
    (its detector answers "v1" for anything it does not know, so "v1" is kept only when an
    SD1-style UNet is really there)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        name = infer_diffusers_model_type(view)
    except Exception as error:  # the detector indexes keys freely; a foreign file may trip it
        logger.debug("diffusers' model-type detection failed: %s", error)
        return None
    if name == "v1" and "model.diffusion_model.input_blocks.0.0.weight" not in view:
        return None
    return name


def describe_weights(view: Mapping[str, torch.Tensor]) -> str:
    """A short description of what `view` (key -> tensor or meta tensor) holds."""
    keys = set(view)
    if not keys:
        return "no tensors"
    if any(k.startswith("reference_net.") for k in keys) and any(k.startswith("backbone.") for k in keys):
        return "an EMO checkpoint (load it with the EMO model loader, not as a component)"
    family = diffusers_model_type(view)
    if family is not None:
        text = _DIFFUSERS_NAMES.get(family, f"a {family} model (diffusers' name)")
        to_k = next((k for k in sorted(keys) if k.startswith("model.diffusion_model.")
                     and k.endswith("attn2.to_k.weight")), None)
        if to_k is not None and view[to_k].ndim == 2:
            text += f", {_width(view[to_k].shape[1])}"
        return text
    for prefix in ("", "wav2vec2.", "audio_encoder.", "model.", "encoder.model."):
        w2v = _strip(keys, prefix)
        if "feature_extractor.conv_layers.0.conv.weight" in w2v and "encoder.layer_norm.weight" in w2v:
            width = view[f"{prefix}encoder.layer_norm.weight"].shape[0]
            layers = len({k.split(".")[2] for k in w2v if k.startswith("encoder.layers.")})
            return f"a wav2vec2-style speech encoder (hidden size {width}, {layers} layers)"
    if any(".motion_modules." in k for k in keys):
        layout = "AnimateDiff" if any(".temporal_transformer." in k for k in keys) else "diffusers MotionAdapter"
        return f"a motion module ({layout} layout)"
    for prefix in ("", "first_stage_model.", "vae."):
        sub = _strip(keys, prefix)
        if "encoder.down.0.block.0.conv1.weight" in sub and "decoder.conv_out.weight" in sub:
            return "a VAE (original LDM layout)"
        if "encoder.down_blocks.0.resnets.0.conv1.weight" in sub and "decoder.conv_out.weight" in sub:
            return "a VAE (diffusers layout)"
    if "input_blocks.0.0.weight" in keys:
        return "a UNet alone (original LDM layout, no 'model.diffusion_model.' prefix)"
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        to_k = next((k for k in sorted(keys) if k.endswith("attn2.to_k.weight")), None)
        extra = f", {_width(view[to_k].shape[1])}" if to_k else ""
        return f"a UNet (diffusers layout{extra})"
    if any("text_model.embeddings" in k for k in keys) or any(k.startswith("cond_stage_model.") for k in keys):
        return "a CLIP text encoder"
    if any(k.startswith(("decoder.", "encoder.")) for k in keys) and any("conv1.weight" in k for k in keys):
        return "an encoder/decoder model of unknown layout"
    sample = ", ".join(sorted(keys)[:4])
    return f"unrecognised weights ({len(keys)} tensors, keys like {sample})"
