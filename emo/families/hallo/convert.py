"""Hallo (fudan-generative-vision/hallo, MIT) -> EMO checkpoint.

Hallo's `net.pth` holds five networks; each maps onto a part of `EMOModel` by prefix:

    reference_unet.*  -> reference_net.*      (SD1.5 UNet keys; Hallo drops the unused output
                                               layers, which are filled with their initial values)
    denoising_unet.*  -> backbone.*           (SD1.5 keys + AnimateDiff motion modules + Hallo's
                                               regional audio_modules, same names)
    face_locator.*    -> face_locator.*
    imageproj.*       -> face_projection.*
    audioproj.*       -> audio_projection.*   (proj1..3 + norm, same names)

Hallo has no speed layers, so the converted model has none either (`config.speed` is None).
Checkpoints converted by earlier versions carry EMO's no-op speed layers and still load. The VAE
and wav2vec2 come from their own files. The architecture numbers come from Hallo's
`configs/inference/default.yaml` and `scripts/inference.py` (`hallo_sd15_config`), or from a
config dict for other sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from diffusers import AutoencoderKL
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ...checkpoints import parse_dtype
from ...config import (
    AudioConfig,
    EMOConfig,
    FaceLocatorConfig,
    InferenceDefaults,
    TemporalConfig,
    UNetConfig,
)
from ...keys import mismatch
from ...model import EMOModel
from ...weights.assemble import initialise_new_layers
from ...weights.components import load_components
from ...weights.files import open_weights
from ...weights.layout import put
from ...schedulers import SD15_ZERO_SNR_V_PREDICTION
from .lineage import check_variant_keys, detect_variant, variant as lineage_variant
from .options import HalloOptions

logger = logging.getLogger(__name__)

PREFIXES = {
    "reference_unet.": "reference_net.",
    "denoising_unet.": "backbone.",
    "face_locator.": "face_locator.",
    "imageproj.": "face_projection.",
    "audioproj.": "audio_projection.",
}

# Hallo's scheduler (configs/inference/default.yaml: zero-SNR v-prediction, trailing spacing).
HALLO_SCHEDULER = SD15_ZERO_SNR_V_PREDICTION

# What scripts/inference.py runs with: 512x512, 16-frame clips, 2 motion frames (the first clip's
# are copies of the reference), 40 DDIM steps, guidance 3.5, 25 fps, pose/face/lip weights 1.
HALLO_DEFAULTS = dict(size=512, fps=25.0, frames_per_clip=16, motion_frames=2, steps=40,
                      guidance_scale=3.5, speed=0.5, first_motion_frames="reference",
                      region_scales=(1.0, 1.0, 1.0))


def hallo_config(unet: Mapping, unet_additional_kwargs: Mapping, *, face_locator: Mapping,
                 imageproj: Mapping, audioproj: Mapping, wav2vec2: Mapping, vae: Mapping,
                 scheduler: Mapping | None = None, name: str = "hallo", variant: str = "hallo") -> EMOConfig:
    """An EMOConfig for a Hallo-lineage model described by its constructor arguments.

    unet: the diffusers UNet config (`attention_head_dim` = heads, as in SD1.5);
    unet_additional_kwargs: Hallo's (motion_module_kwargs, audio_attention_dim, ...);
    face_locator / imageproj / audioproj: the kwargs of Hallo's FaceLocator, ImageProjModel and
    AudioProjModel; variant: "hallo", "hallo2" or "joyhallo" (`lineage.VARIANTS`: JoyHallo's
    shared audio attention, Hallo2's audio segments, their defaults).
    """
    release = lineage_variant(variant)
    extra = unet_additional_kwargs
    motion = extra.get("motion_module_kwargs", {})
    if not extra.get("use_motion_module", True) or not extra.get("use_audio_module", True):
        raise ValueError("Hallo conversion: only models with motion and audio modules are supported.")
    if motion.get("attention_block_types", ["Temporal_Self", "Temporal_Self"]) != ["Temporal_Self", "Temporal_Self"]:
        raise ValueError(f"Hallo conversion: unsupported motion attention blocks {motion['attention_block_types']}.")
    if unet.get("use_linear_projection"):
        raise ValueError("Hallo conversion: use_linear_projection=True is not supported (Hallo's config has False).")
    levels = tuple("CrossAttn" in t for t in unet["down_block_types"])
    if audioproj["output_dim"] != extra["audio_attention_dim"]:
        raise ValueError("Hallo conversion: audioproj output_dim must equal audio_attention_dim.")
    geometry = (wav2vec2["num_hidden_layers"], wav2vec2["hidden_size"])
    if geometry != (audioproj["blocks"], audioproj["channels"]):
        raise ValueError(
            f"Hallo conversion: the audio projection reads {audioproj['blocks']} layers x "
            f"{audioproj['channels']} channels of wav2vec2 features but the wav2vec2 config gives "
            f"{geometry[0]} x {geometry[1]}; use the wav2vec2 model {release.title} was trained with "
            f"(pretrained_models/{release.wav2vec2_path})."
        )
    return EMOConfig(
        unet=UNetConfig(
            in_channels=unet.get("in_channels", 4), out_channels=unet.get("out_channels", 4),
            block_out_channels=tuple(unet["block_out_channels"]), attention_levels=levels,
            layers_per_block=unet["layers_per_block"], num_attention_heads=unet["attention_head_dim"],
            cross_attention_dim=unet["cross_attention_dim"], norm_num_groups=unet["norm_num_groups"],
            norm_eps=unet.get("norm_eps", 1e-5), flip_sin_to_cos=unet.get("flip_sin_to_cos", True),
            freq_shift=unet.get("freq_shift", 0),
        ),
        # Hallo's motion modules use GroupNorm with 32 groups whatever the UNet uses.
        temporal=TemporalConfig(num_attention_heads=motion.get("num_attention_heads", 8),
                                num_transformer_blocks=motion.get("num_transformer_block", 1),
                                max_frames=motion.get("temporal_position_encoding_max_len", 32),
                                norm_num_groups=32),
        audio=AudioConfig(wav2vec2=dict(wav2vec2), window_radius=(audioproj["seq_len"] - 1) // 2,
                          num_tokens=audioproj["context_tokens"],
                          intermediate_dim=audioproj["intermediate_dim"]),
        face_locator=FaceLocatorConfig(conditioning_channels=face_locator.get("conditioning_channels", 3),
                                       block_out_channels=tuple(face_locator.get("block_out_channels",
                                                                                 (16, 32, 64, 128)))),
        vae=dict(vae),
        scheduler=dict(scheduler or HALLO_SCHEDULER),
        speed=None,
        defaults=InferenceDefaults(**{**HALLO_DEFAULTS, **release.defaults}),
        name=name,
        family="hallo",
        family_options=HalloOptions(face_embedding_dim=imageproj["clip_embeddings_dim"],
                                    face_tokens=imageproj["clip_extra_context_tokens"],
                                    audio_attention_dim=extra["audio_attention_dim"],
                                    variant=variant, **release.options).to_dict(),
    )


def hallo_sd15_config(variant: str = "hallo", wav2vec2: Mapping | None = None) -> EMOConfig:
    """The configuration of a released Hallo / Hallo2 / JoyHallo `net.pth` (SD1.5, a 12-layer
    768-wide wav2vec2, 768-wide audio). wav2vec2: the speech encoder's config (a transformers
    Wav2Vec2Config's fields, e.g. read from the user's folder; default wav2vec2-base-960h's)."""
    base = EMOConfig.preset("sd15")
    unet = {
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        "layers_per_block": 2, "attention_head_dim": 8, "cross_attention_dim": 768,
        "norm_num_groups": 32,
    }
    extra = {"use_motion_module": True, "use_audio_module": True, "audio_attention_dim": 768,
             "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                      "temporal_position_encoding_max_len": 32}}
    return hallo_config(
        unet, extra,
        face_locator={"conditioning_channels": 3, "block_out_channels": (16, 32, 64, 128)},
        imageproj={"clip_embeddings_dim": 512, "clip_extra_context_tokens": 4},
        audioproj={"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512,
                   "output_dim": 768, "context_tokens": 32},
        wav2vec2={**base.audio.wav2vec2, **(wav2vec2 or {})}, vae=base.vae, name=f"{variant}-sd15",
        variant=variant,
    )


def convert_hallo_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Hallo's `net.pth` keys to EMOModel keys. Keys outside Hallo's five networks are an
    error (a wrong file); what EMO has beyond Hallo is left for the caller to fill."""
    converted, unknown = {}, []
    for key, tensor in state.items():
        for source, target in PREFIXES.items():
            if key.startswith(source):
                converted[target + key[len(source):]] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8])
        raise ValueError(
            f"Hallo conversion: {len(unknown)} keys belong to none of Hallo's networks "
            f"(reference_unet, denoising_unet, face_locator, imageproj, audioproj), e.g. {shown}; "
            "give the `net.pth` from Hallo's pretrained_models/hallo folder."
        )
    return converted


# Parts of EMOModel that a Hallo file never has. Anything else missing is an error.
NOT_IN_HALLO = ("reference_net.conv_norm_out.", "reference_net.conv_out.", "vae.", "audio_encoder.")


def is_extra_to_hallo(key: str) -> bool:
    return key.startswith(NOT_IN_HALLO)


def build_hallo_model(state: Mapping[str, torch.Tensor], config: EMOConfig, *, vae=None, wav2vec2=None,
                      seed: int = 0, dtype: torch.dtype | str | None = None):
    """An EMOModel holding Hallo's weights (copied in), loaded strictly.

    state: Hallo's `net.pth` state dict; vae / wav2vec2: files, folders or WeightFiles that
    `emo.weights.load_components` reads (sd-vae-ft-mse and wav2vec2-base-960h for the real
    model). Without them the VAE and wav2vec2 get a random initialisation, which only tests and
    shape checks should use. What the model has beyond Hallo's file (the ReferenceNet's unused
    output layers) keeps its constructor values. `dtype` is that of every floating tensor
    (default fp32); the model is built in it directly, so a full-size fp16 conversion never
    holds an fp32 copy.
    """
    converted = convert_hallo_state(state)
    with torch.device("meta"):
        model = EMOModel(config)
    dtype = parse_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    problems = mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()},
                        {k: tuple(v.shape) for k, v in converted.items()}, may_be_missing=is_extra_to_hallo)
    if problems:
        raise ValueError(f"Hallo conversion: the weights do not fit the configured model ({problems}); "
                         "check that the config matches the file (full-size net.pth -> hallo_sd15_config()).")
    put(model, converted)
    if vae is not None or wav2vec2 is not None:
        load_components(model, vae=vae, wav2vec2=wav2vec2)
    for name, source, build in (("vae", vae, lambda: AutoencoderKL(**config.vae)),
                                ("audio_encoder", wav2vec2,
                                 lambda: Wav2Vec2Model(Wav2Vec2Config(**config.audio.wav2vec2)))):
        if source is None:
            logger.warning("Hallo conversion: no %s weights given; using a random initialisation", name)
            with torch.device("cpu"):
                put(model, {f"{name}.{k}": v for k, v in build().state_dict().items()})
    initialise_new_layers(model, seed=seed)
    return model.eval()


def convert_hallo_file(net: str, *, vae, wav2vec2, config: EMOConfig | None = None, seed: int = 0,
                       dtype: torch.dtype | str | None = None, variant: str | None = None):
    """Read a Hallo / Hallo2 / JoyHallo `net.pth` (a pickle, loaded with weights_only=True) and
    build the model. Without `config`, the released architecture of `variant` (None: detected,
    `lineage.detect_variant`), with the speech encoder's config from the `wav2vec2` folder when it
    has a config.json (JoyHallo's chinese-wav2vec2-base)."""
    weights = open_weights(net, "Hallo net.pth")
    keys = list(weights)
    if config is None:
        variant = variant or detect_variant(keys, net)
        config = hallo_sd15_config(variant, wav2vec2_folder_config(wav2vec2))
    else:
        variant = variant or HalloOptions.from_dict(config.family_options).variant
    check_variant_keys(variant, keys)
    logger.info("Hallo conversion: %s as %s", net, lineage_variant(variant).title)
    return build_hallo_model({k: weights[k] for k in keys}, config, vae=vae, wav2vec2=wav2vec2, seed=seed,
                             dtype=dtype)


# The fields of a transformers Wav2Vec2Config that shape the encoder or change what it computes.
_WAV2VEC2_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
                    "conv_stride", "conv_kernel", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
                    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "layer_norm_eps", "hidden_act",
                    "feat_extract_activation")


def wav2vec2_folder_config(source) -> dict | None:
    """The architecture fields of a Hugging Face wav2vec2 folder's config.json, or None when
    `source` is not such a folder (a single weights file: the default config is kept)."""
    import json
    import os
    from pathlib import Path

    if not isinstance(source, (str, os.PathLike)) or not (Path(source) / "config.json").is_file():
        return None
    path = Path(source) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({error}); give the speech encoder's Hugging Face "
                         "folder as downloaded (config.json + weights).") from error
    if data.get("model_type") != "wav2vec2":
        raise ValueError(f"{path} describes a {data.get('model_type')!r} model, not wav2vec2; Hallo and Hallo2 "
                         "use wav2vec2-base-960h, JoyHallo chinese-wav2vec2-base.")
    return {k: data[k] for k in _WAV2VEC2_FIELDS if k in data}
