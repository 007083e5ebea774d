"""A user's unchanged Hallo `pretrained_models` folder -> a Hallo model, in one step.

Hallo's README has users download one folder laid out as::

    pretrained_models/
      hallo/net.pth                         the five Hallo networks (required)
      sd-vae-ft-mse/                        the VAE, diffusers folder (required)
      wav2vec/wav2vec2-base-960h/           the speech encoder, Hugging Face folder (required)
      stable-diffusion-v1-5/unet/config.json  the UNet's architecture (required)
      face_analysis/models/                 insightface antelopev2: scrfd_10g_bnkps.onnx, glintr100.onnx,
                                            2d106det.onnx (+ MediaPipe's .task) (identity and masks)
      audio_separator/Kim_Vocal_2.onnx      MDX-Net vocal separation (optional: songs)
      motion_module/mm_sd_v15_v2.ckpt       not read: net.pth already holds Hallo's trained motion modules

Hallo2's folder is the same with `hallo2/net.pth`; JoyHallo's has `joyhallo/net.pth` and its
speech encoder in `chinese-wav2vec2-base/` (`lineage.VARIANTS`); the release is read from which
net.pth is there (and JoyHallo's from its keys).

The architecture is read from the folder (the UNet's config.json, the VAE's and wav2vec2's
config.json) and from the shapes in net.pth (face locator, identity and audio projections,
motion modules); only the temporal attention's head count is not in any file and is Hallo's
(`configs/inference/default.yaml`: 8).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ...weights.files import open_weights
from .convert import build_hallo_model, hallo_config
from .lineage import VARIANTS, check_variant_keys, detect_variant
from .portrait import REQUIRED_FACE_FILES, attach_identity

logger = logging.getLogger(__name__)

HALLO_TEMPORAL_HEADS = 8  # configs/inference/default.yaml motion_module_kwargs.num_attention_heads
VOCAL_MODEL = "audio_separator/Kim_Vocal_2.onnx"

# Where each file goes, relative to pretrained_models/, and what it is (for error messages).
LAYOUT = {
    "net": ("hallo/net.pth", "Hallo's weights"),
    "vae": ("sd-vae-ft-mse/config.json", "the VAE sd-vae-ft-mse (a diffusers folder)"),
    "wav2vec2": ("wav2vec/wav2vec2-base-960h/config.json", "wav2vec2-base-960h (a Hugging Face folder)"),
    "unet_config": ("stable-diffusion-v1-5/unet/config.json", "the SD1.5 UNet config"),
}


@dataclass(frozen=True)
class HalloFolder:
    """The files of a Hallo pretrained_models folder (see the module docstring)."""

    root: Path
    net: Path
    vae: Path  # folder
    wav2vec2: Path  # folder
    unet_config: Path
    face_analysis: Path | None  # None when face_analysis/models is absent
    vocal_model: Path | None  # None when audio_separator/Kim_Vocal_2.onnx is absent
    release: str = "hallo"  # whose layout: "hallo", "hallo2" (hallo2/net.pth) or "joyhallo" (joyhallo/net.pth)


def locate_hallo_folder(root: str | os.PathLike, *, option: str = "--hallo-dir") -> HalloFolder:
    """Check a Hallo pretrained_models folder; FileNotFoundError names the first missing file and
    where it goes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{option}: no folder at '{root}'; give Hallo's pretrained_models folder "
                                "(hallo/net.pth, sd-vae-ft-mse/, wav2vec/, face_analysis/, ...)")
    # Hallo2 and JoyHallo keep the same layout with their own net.pth (hallo2/, joyhallo/) and,
    # for JoyHallo, its own speech encoder (chinese-wav2vec2-base/).
    release = next((name for name, v in VARIANTS.items() if (root / v.net_path).is_file()), "hallo")
    layout = dict(LAYOUT)
    if release != "hallo":
        title = VARIANTS[release].title
        layout["net"] = (VARIANTS[release].net_path, f"{title}'s weights")
        layout["wav2vec2"] = (f"{VARIANTS[release].wav2vec2_path}/config.json",
                              f"{title}'s speech encoder {Path(VARIANTS[release].wav2vec2_path).name} "
                              "(a Hugging Face folder)")
    for key, (relative, what) in layout.items():
        if key == "net" and release == "hallo" and not (root / relative).is_file():
            raise FileNotFoundError(f"{option}: no net.pth in '{root}'; Hallo's weights go at '{root / relative}' "
                                    f"(Hallo2: '{root / VARIANTS['hallo2'].net_path}', JoyHallo: "
                                    f"'{root / VARIANTS['joyhallo'].net_path}')")
        if not (root / relative).is_file():
            raise FileNotFoundError(f"{option}: {relative} missing in '{root}'; it is {what} and goes at "
                                    f"'{root / relative}' (Hallo's pretrained_models layout)")
    face = root / "face_analysis"
    vocal = root / VOCAL_MODEL
    return HalloFolder(root=root, net=root / layout["net"][0], vae=(root / layout["vae"][0]).parent,
                       wav2vec2=(root / layout["wav2vec2"][0]).parent, unet_config=root / layout["unet_config"][0],
                       face_analysis=face if face.is_dir() else None,
                       vocal_model=vocal if vocal.is_file() else None, release=release)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Hallo folder: cannot read {path} as JSON ({error}); it should be the config.json "
                         "of Hallo's download") from error


def _shape(state, key: str, folder: HalloFolder) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"Hallo folder: {folder.net} has no {key}; it is not Hallo's net.pth")
    return tuple(state[key].shape)


def hallo_folder_config(folder: HalloFolder, state, *, temporal_heads: int = HALLO_TEMPORAL_HEADS):
    """The EMOConfig of the model in `folder`: the UNet from its config.json, the small networks
    and motion modules from net.pth's shapes (`state`: name -> tensor), VAE and wav2vec2 from
    their config.json."""
    unet = _read_json(folder.unet_config)
    wav2vec2 = _read_json(folder.wav2vec2 / "config.json")
    vae_json = _read_json(folder.vae / "config.json")
    vae_args = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    vae = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vae_json.items() if k in vae_args}
    wav2vec2 = {k: v for k, v in wav2vec2.items() if not k.startswith("_")}

    output_dim = _shape(state, "audioproj.norm.weight", folder)[0]
    intermediate, flat = _shape(state, "audioproj.proj1.weight", folder)
    blocks, channels = wav2vec2["num_hidden_layers"], wav2vec2["hidden_size"]
    if flat % (blocks * channels):
        raise ValueError(f"Hallo folder: net.pth's audio projection reads {flat} values per frame, not a whole "
                         f"window of {blocks} x {channels} wav2vec2 features; is {folder.wav2vec2} the wav2vec2 "
                         "Hallo was trained with?")
    # The release: JoyHallo from its keys (one audio attention), Hallo2 from its folder.
    release = "hallo2" if folder.release == "hallo2" else detect_variant(state.keys(), folder.net)
    check_variant_keys(release, state.keys())
    context = _shape(state, "imageproj.norm.weight", folder)[0]
    tokens_x_context, embedding_dim = _shape(state, "imageproj.proj.weight", folder)
    conv_in = _shape(state, "face_locator.conv_in.weight", folder)
    odd_blocks = sorted(int(k.split(".")[2]) for k in state
                        if k.startswith("face_locator.blocks.") and k.endswith(".weight") and int(k.split(".")[2]) % 2)
    locator_channels = (conv_in[0], *(_shape(state, f"face_locator.blocks.{i}.weight", folder)[0] for i in odd_blocks))
    pe = next((k for k in state if k.startswith("denoising_unet.") and k.endswith("pos_encoder.pe")), None)
    blocks_per_module = {k.split("transformer_blocks.")[1].split(".")[0] for k in state
                         if k.startswith("denoising_unet.down_blocks.0.motion_modules.0.temporal_transformer"
                                         ".transformer_blocks.")}
    extra = {"audio_attention_dim": output_dim,
             "motion_module_kwargs": {"num_attention_heads": temporal_heads,
                                      "num_transformer_block": max(1, len(blocks_per_module)),
                                      "temporal_position_encoding_max_len": state[pe].shape[1] if pe else 32}}
    return hallo_config(
        unet, extra,
        face_locator={"conditioning_channels": conv_in[1], "block_out_channels": locator_channels},
        imageproj={"clip_embeddings_dim": embedding_dim, "clip_extra_context_tokens": tokens_x_context // context},
        audioproj={"seq_len": flat // (blocks * channels), "blocks": blocks, "channels": channels,
                   "intermediate_dim": intermediate, "output_dim": output_dim,
                   "context_tokens": _shape(state, "audioproj.proj3.weight", folder)[0] // output_dim},
        wav2vec2=wav2vec2, vae=vae, name=f"{folder.release} ({folder.root.name})", variant=release,
    )


def load_hallo_folder(root: str | os.PathLike, *, identity: bool = True, dtype: torch.dtype | str | None = None,
                      temporal_heads: int = HALLO_TEMPORAL_HEADS, landmark_source: str = "auto",
                      option: str = "--hallo-dir"):
    """A Hallo pretrained_models folder -> (EMOModel in Hallo mode with its identity source, the
    HalloFolder). identity=False runs without the face embedding (the user's explicit choice);
    otherwise face_analysis/models must hold the antelopev2 files (FileNotFoundError says where)."""
    folder = locate_hallo_folder(root, option=option)
    face = folder.face_analysis
    if identity and face is None:
        raise FileNotFoundError(
            f"{option}: face_analysis/models missing in '{folder.root}'; Hallo's identity needs insightface's "
            f"antelopev2 files ({', '.join(REQUIRED_FACE_FILES)}) in '{folder.root / 'face_analysis' / 'models'}', "
            "or run without identity (--no-identity)")
    weights = open_weights(str(folder.net), "Hallo net.pth")
    state = {k: weights[k] for k in weights}
    config = hallo_folder_config(folder, state, temporal_heads=temporal_heads)
    model = build_hallo_model(state, config, vae=str(folder.vae), wav2vec2=str(folder.wav2vec2), dtype=dtype)
    attach_identity(model, face, identity=identity, landmark_source=landmark_source)
    logger.info("Hallo folder %s: %s, identity %s", folder.root, config.name,
                "from " + str(face) if identity else "off (chosen)")
    return model, folder
