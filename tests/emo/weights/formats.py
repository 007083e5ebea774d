"""Writers of the on-disk formats users have, for tests: they turn an EMO model's own state
into each layout (diffusers -> original LDM names written out here independently of diffusers'
converters, so loading them back checks the converters rather than repeating them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from emo.config import EMOConfig

_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def unet_key_to_ldm(key: str, layers_per_block: int, attention_levels: tuple[bool, ...]) -> str:
    """A diffusers UNet2DConditionModel key -> the original LDM (openaimodel) key."""
    n = layers_per_block
    for d, o in _UNET_TOP.items():
        if key.startswith(d + "."):
            return o + key[len(d):]

    def resnet(rest: str) -> str:
        name, _, tail = rest.partition(".")
        return f"{_RESNET_TO_LDM[name]}.{tail}"

    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{i * (n + 1) + j + 1}.0.{resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{i * (n + 1) + j + 1}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (n + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (n + 1) + j}.0.{resnet(rest)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{i * (n + 1) + j}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        has_attention = attention_levels[::-1][i]
        return f"output_blocks.{i * (n + 1) + n}.{2 if has_attention else 1}.conv.{m[2]}"
    raise KeyError(key)


def unet_to_ldm(state: dict, config: EMOConfig, prefix: str = "model.diffusion_model.") -> dict:
    cfg = config.unet
    return {prefix + unet_key_to_ldm(k, cfg.layers_per_block, cfg.attention_levels): v for k, v in state.items()}


_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTENTION_TO_LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def vae_key_to_ldm(key: str, levels: int) -> tuple[str, bool]:
    """A diffusers AutoencoderKL key -> (LDM key, whether the tensor becomes a 1x1 conv)."""
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)",
                     key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[m[2]]}.{m[3]}", m[2] != "group_norm" and m[3] == "weight"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        rest = m[3].replace("conv_shortcut", "nin_shortcut")
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{rest}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    return key, False  # conv_in/out, norm_out, quant_conv, post_quant_conv keep their names


def vae_to_ldm(state: dict, config: EMOConfig, prefix: str = "") -> dict:
    levels = len(config.vae["block_out_channels"])
    out = {}
    for k, v in state.items():
        name, conv = vae_key_to_ldm(k, levels)
        out[prefix + name] = v[:, :, None, None] if conv else v
    return out


def vae_to_legacy_diffusers(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        m = re.match(r"(.+\.mid_block\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(.+)", k)
        out[f"{m[1]}.{_VAE_ATTENTION_TO_LEGACY[m[2]]}.{m[3]}" if m else k] = v
    return out


def part(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.clone() for k, v in state.items() if k.startswith(prefix)}


def sd_checkpoint(model, *, with_vae: bool = True, extras: bool = True) -> dict:
    """A ComfyUI-style single-file SD checkpoint of the model's UNet (+VAE, + unused CLIP bits)."""
    state = model.state_dict()
    out = unet_to_ldm(part(state, "reference_net."), model.config)
    if with_vae:
        out.update(vae_to_ldm(part(state, "vae."), model.config, prefix="first_stage_model."))
    if extras:  # parts of real SD files that EMO does not use
        out["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = torch.randn(77, 8)
        out["alphas_cumprod"] = torch.linspace(1, 0, 10)
    return out


def write_diffusers_sd_folder(model, root: Path) -> Path:
    """A diffusers pipeline folder: model_index.json, unet/, vae/."""
    from emo.weights.sd15 import diffusers_unet_config

    state = model.state_dict()
    (root / "unet").mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    unet_config = {"_class_name": "UNet2DConditionModel", **diffusers_unet_config(model.config.unet)}
    (root / "unet" / "config.json").write_text(json.dumps(unet_config))
    save_file(part(state, "reference_net."), str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    (root / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **model.config.vae}))
    vae = vae_to_legacy_diffusers(part(state, "vae."))
    save_file(vae, str(root / "vae" / "diffusion_pytorch_model.safetensors"))
    return root


def motion_state(model, *, pe_length: int | None = None, mid_block: bool = True) -> dict:
    """The backbone's temporal modules in AnimateDiff's layout (no speed layers), positional
    tables cut or extended to `pe_length` frames."""
    from emo.models.temporal import SPEED_KEY_MARKER, sinusoidal_table

    out = {}
    for k, v in model.backbone.state_dict().items():
        if ".motion_modules." not in k or SPEED_KEY_MARKER in k or (not mid_block and k.startswith("mid_block.")):
            continue
        if k.endswith("pos_encoder.pe") and pe_length is not None:
            v = sinusoidal_table(pe_length, v.shape[-1])
        out[k] = v.clone()
    return out


def wav2vec2_ctc(model):
    """A transformers Wav2Vec2ForCTC (as facebook/wav2vec2-base-960h) holding the model's encoder."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = Wav2Vec2Config(**{**model.config.audio.wav2vec2, "mask_time_prob": 0.05})
    ctc = Wav2Vec2ForCTC(config)
    missing, unexpected = ctc.wav2vec2.load_state_dict(model.audio_encoder.state_dict(), strict=False)
    assert missing == ["masked_spec_embed"] and not unexpected
    return ctc


def old_weight_norm_names(state: dict) -> dict:
    return {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}


def save_pickle(state: dict, path: Path, *, nested: bool = False) -> Path:
    torch.save({"state_dict": state, "global_step": 1000, "epoch": 3} if nested else state, path)
    return path


def save_safetensors(state: dict, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def read_hallo_fixture(path: Path) -> dict:
    """A Hallo-lineage parity fixture (shared/fixtures/hallo_parity/NAME.safetensors + NAME.json;
    Hallo2's and JoyHallo's in tests/fixtures/{hallo2,joyhallo}_parity, their JSON's "variant"):
    {"meta": its JSON, "t": every tensor, "weights": Hallo's net.pth state (the five networks),
    "config": the EMOConfig of its small Hallo model}. The fixtures carry no VAE or wav2vec2;
    the config has the tiny preset's VAE and a tiny wav2vec2 of the geometry the audio
    projection reads."""
    from safetensors import safe_open

    from emo.families.hallo.convert import hallo_config

    meta = json.loads(path.with_suffix(".json").read_text())
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    weights = {k: v for k, v in tensors.items() if not k.startswith(("input.", "inter.", "output."))}
    tiny = EMOConfig.preset("tiny")
    modules = meta["modules"]
    audioproj = modules["audioproj"]["kwargs"]
    wav2vec2 = {**tiny.audio.wav2vec2, "num_hidden_layers": audioproj["blocks"],
                "hidden_size": audioproj["channels"], "num_attention_heads": 2,
                "intermediate_size": 2 * audioproj["channels"]}
    config = hallo_config(
        modules["denoising_unet"]["from_config"], modules["denoising_unet"]["unet_additional_kwargs"],
        face_locator=modules["face_locator"]["kwargs"], imageproj=modules["imageproj"]["kwargs"],
        audioproj=audioproj, wav2vec2=wav2vec2, vae=tiny.vae,
        scheduler=meta["scheduler"]["kwargs"], name=path.stem, variant=meta.get("variant", "hallo"),
    )
    return {"meta": meta, "t": tensors, "weights": weights, "config": config}
