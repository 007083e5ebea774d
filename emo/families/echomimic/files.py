"""Reading a user's unchanged EchoMimic `pretrained_weights/` folder, checked key for key.

The folder, as EchoMimic's README and `configs/prompts/animation[_acc].yaml` lay it out::

    pretrained_weights/
      denoising_unet.pth        motion_module.pth         (V1, infer_audio2vid.py)
      denoising_unet_acc.pth    motion_module_acc.pth     (acc, infer_audio2vid_acc.py)
      reference_unet.pth        face_locator.pth          (shared by V1 and acc)
      audio_processor/whisper_tiny.pt                     (openai whisper format)
      sd-vae-ft-mse/                                      (a diffusers AutoencoderKL folder)
      sd-image-variations-diffusers/unet/config.json      (only the config is used)

Every tensor of the `.pth` files is accounted for against the layout EchoMimic builds from the
UNet config (the reference UNet is EchoMimic's own 2D UNet without attn2/norm2 and without the
output layers; the denoising UNet is the 2D layout with 384-wide audio cross-attention plus the
AnimateDiff-style motion modules of `configs/inference/inference_v2.yaml`). `motion_module.pth`
holds a subset of the denoising UNet's motion keys (EchoMimic overwrites them with the values in
`denoising_unet.pth`). `.pth` files are read with `torch.load(weights_only=True, mmap=True)`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from ...keys import mismatch
from ...weights.files import WeightFile, WeightFileError, open_weights, read_folder_config, weights_in_folder
from ...weights.identify import describe_weights
from .whisper import WhisperEncoder, check_checkpoint, read_whisper_checkpoint

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]

RELEASE = "EchoMimic's pretrained_weights (huggingface.co/BadToBest/EchoMimic)"

# infer_audio2vid.py: FaceLocator(320, conditioning_channels=1, block_out_channels=(16, 32, 96, 256))
RELEASED_FACE_LOCATOR_CHANNELS = (16, 32, 96, 256)
# configs/inference/inference_v2.yaml (unet_additional_kwargs): audio cross-attention width and
# the motion modules: one transformer block of two Temporal_Self attentions, position table of 32
AUDIO_WIDTH = 384
MOTION_MAX_LEN = 32
MOTION_ATTENTIONS = 2

SHARED_FILES = {
    "reference_unet": ("reference_unet.pth", "the reference UNet"),
    "face_locator": ("face_locator.pth", "the face locator"),
    "whisper": ("audio_processor/whisper_tiny.pt", "the whisper-tiny audio encoder"),
    "vae": ("sd-vae-ft-mse", "the VAE folder (diffusers AutoencoderKL)"),
    "unet_config": ("sd-image-variations-diffusers/unet/config.json", "the UNet config both UNets are built from"),
}
VARIANT_FILES = {
    "v1": {"denoising_unet": ("denoising_unet.pth", "the V1 denoising UNet"),
           "motion_module": ("motion_module.pth", "the V1 motion modules")},
    "acc": {"denoising_unet": ("denoising_unet_acc.pth", "the accelerated (acc) denoising UNet"),
            "motion_module": ("motion_module_acc.pth", "the acc motion modules")},
}
WEIGHT_ROLES = ("denoising_unet", "motion_module", "reference_unet", "face_locator")


# --------------------------------------------------------------------------------------------------
# The released layout, computed from a UNet config
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _diffusers_unet_layout(config_json: str) -> dict[str, Shape]:
    from diffusers import UNet2DConditionModel

    config = json.loads(config_json)
    try:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise WeightFileError(f"the UNet config is not a usable UNet2DConditionModel config ({error}).") from None
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


def _unet_config(config: dict, **changes) -> str:
    return json.dumps({**config, **changes}, sort_keys=True)


def reference_unet_layout(unet_config: dict) -> dict[str, Shape]:
    """Key -> shape of `reference_unet.pth`: the 2D UNet without cross-attention (attn2, norm2)
    and without the output layers (conv_norm_out, conv_out), which EchoMimic's reference UNet
    class does not have."""
    def absent(key: str) -> bool:
        cross_attention = ".attn2." in key or (".transformer_blocks." in key and ".norm2." in key)
        return cross_attention or key.startswith(("conv_norm_out.", "conv_out."))

    return {k: s for k, s in _diffusers_unet_layout(_unet_config(unet_config)).items() if not absent(k)}


def motion_module_layout(unet_config: dict, max_len: int = MOTION_MAX_LEN) -> dict[str, Shape]:
    """Key -> shape of the motion modules: one per resnet at every level of the down and up
    blocks (`motion_module_resolutions` [1, 2, 4, 8]) and one in the mid block."""
    widths = list(unet_config["block_out_channels"])
    per_block = int(unet_config["layers_per_block"])
    sites = [(f"down_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(widths) for j in range(per_block)]
    sites += [(f"up_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(reversed(widths))
              for j in range(per_block + 1)]
    sites.append(("mid_block.motion_modules.0", widths[-1]))
    layout: dict[str, Shape] = {}
    for site, c in sites:
        t = f"{site}.temporal_transformer."
        layout.update({t + "norm.weight": (c,), t + "norm.bias": (c,),
                       t + "proj_in.weight": (c, c), t + "proj_in.bias": (c,)})
        b = t + "transformer_blocks.0."
        for a in range(MOTION_ATTENTIONS):
            attention = f"{b}attention_blocks.{a}."
            layout.update({f"{attention}to_{p}.weight": (c, c) for p in "qkv"})
            layout.update({attention + "to_out.0.weight": (c, c), attention + "to_out.0.bias": (c,),
                           attention + "pos_encoder.pe": (1, max_len, c)})
        for a in range(MOTION_ATTENTIONS):
            layout.update({f"{b}norms.{a}.weight": (c,), f"{b}norms.{a}.bias": (c,)})
        layout.update({b + "ff.net.0.proj.weight": (8 * c, c), b + "ff.net.0.proj.bias": (8 * c,),  # GEGLU
                       b + "ff.net.2.weight": (c, 4 * c), b + "ff.net.2.bias": (c,),
                       b + "ff_norm.weight": (c,), b + "ff_norm.bias": (c,),
                       t + "proj_out.weight": (c, c), t + "proj_out.bias": (c,)})
    return layout


def denoising_unet_layout(unet_config: dict, max_len: int = MOTION_MAX_LEN) -> dict[str, Shape]:
    """Key -> shape of `denoising_unet.pth`: the 2D UNet with 384-wide (whisper) cross-attention,
    and every motion module (the file holds them all, position tables included)."""
    layout = dict(_diffusers_unet_layout(_unet_config(unet_config, cross_attention_dim=AUDIO_WIDTH)))
    layout.update(motion_module_layout(unet_config, max_len))
    return layout


def face_locator_layout(embedding_channels: int, block_out_channels=RELEASED_FACE_LOCATOR_CHANNELS,
                        conditioning_channels: int = 1) -> dict[str, Shape]:
    """Key -> shape of `face_locator.pth`: conv_in, then per level a 3x3 conv and a stride-2 3x3
    conv to the next width (`blocks.0..`), then conv_out to the UNet's first width."""
    widths = list(block_out_channels)
    layout = {"conv_in.weight": (widths[0], conditioning_channels, 3, 3), "conv_in.bias": (widths[0],)}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layout.update({f"blocks.{2 * i}.weight": (a, a, 3, 3), f"blocks.{2 * i}.bias": (a,),
                       f"blocks.{2 * i + 1}.weight": (b, a, 3, 3), f"blocks.{2 * i + 1}.bias": (b,)})
    layout.update({"conv_out.weight": (embedding_channels, widths[-1], 3, 3), "conv_out.bias": (embedding_channels,)})
    return layout


def face_locator_channels(shapes: dict[str, Shape]) -> tuple[int, ...]:
    """The block widths of a face locator file, read off conv_in and the stride-2 convs."""
    if "conv_in.weight" not in shapes:
        return ()
    widths = [shapes["conv_in.weight"][0]]
    i = 1
    while f"blocks.{i}.weight" in shapes:
        widths.append(shapes[f"blocks.{i}.weight"][0])
        i += 2
    return tuple(widths)


# --------------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------------


@dataclass
class EchoMimicFolder:
    """What a `pretrained_weights/` folder holds, for one variant ("v1" or "acc").

    `paths` maps a role (denoising_unet, motion_module, reference_unet, face_locator, whisper, vae,
    unet_config) to its path; `variants` lists every variant whose files are all present.
    `weights(role)` opens a `.pth` on first use (memory-mapped); nothing is read before.
    """

    folder: Path
    variant: str
    variants: tuple[str, ...]
    paths: dict[str, Path]
    unet_config: dict
    _open: dict[str, WeightFile] = field(default_factory=dict, repr=False)

    def weights(self, role: str) -> WeightFile:
        """The tensors of `denoising_unet`, `motion_module`, `reference_unet` or `face_locator`."""
        if role not in WEIGHT_ROLES:
            raise ValueError(f"EchoMimicFolder.weights: role must be one of {WEIGHT_ROLES}, got {role!r}")
        if role not in self._open:
            self._open[role] = open_weights(self.paths[role], f"EchoMimic {role}")
        return self._open[role]

    @property
    def face_locator_channels(self) -> tuple[int, ...]:
        return face_locator_channels(self.weights("face_locator").shapes())

    def whisper_encoder(self, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> WhisperEncoder:
        checkpoint = read_whisper_checkpoint(self.paths["whisper"])
        return WhisperEncoder.from_checkpoint(checkpoint, str(self.paths["whisper"])).to(device=device, dtype=dtype)

    def expected_layouts(self) -> dict[str, dict[str, Shape]]:
        """role -> key -> shape, from this folder's UNet config and face locator widths."""
        return {
            "denoising_unet": denoising_unet_layout(self.unet_config),
            "motion_module": motion_module_layout(self.unet_config),
            "reference_unet": reference_unet_layout(self.unet_config),
            "face_locator": face_locator_layout(self.unet_config["block_out_channels"][0],
                                                self.face_locator_channels or RELEASED_FACE_LOCATOR_CHANNELS),
        }

    def validate(self) -> None:
        """Check every key and shape of every file; one error naming the file and what differs."""
        for role, expected in self.expected_layouts().items():
            source = self.weights(role)
            found = source.shapes()
            _refuse_other_families(self.paths[role], found, role)
            if role == "motion_module":  # any subset of the denoising UNet's motion keys
                expected = {k: expected[k] for k in found if k in expected}
            problems = mismatch(expected, found)
            if problems:
                config = SHARED_FILES["unet_config"][0]
                if 2 * len(found.keys() & expected.keys()) >= len(found):
                    # mostly the right names: the file and the config disagree on sizes or depth
                    found_text = (f"Most of its keys are EchoMimic's, so {config} may not be the config it was "
                                  "made with, or the file is damaged")
                else:
                    found_text = f"The file holds {describe_weights(source.meta_view())}"
                raise WeightFileError(
                    f"EchoMimic folder {self.folder}: {self.paths[role].name} does not have EchoMimic's "
                    f"{role.replace('_', ' ')} layout (built from {config}): {problems}. {found_text}; "
                    f"use the unchanged files from {RELEASE}.")
        check_checkpoint(read_whisper_checkpoint(self.paths["whisper"]), str(self.paths["whisper"]))
        logger.info("EchoMimic folder %s (%s): every file matches the released layout", self.folder, self.variant)


def read_echomimic_folder(folder: str | os.PathLike, variant: Optional[str] = None, *,
                          validate: bool = True) -> EchoMimicFolder:
    """Inventory (and by default validate) an EchoMimic `pretrained_weights` folder.

    Args:
        folder: the `pretrained_weights` folder, unchanged.
        variant: "v1", "acc", or None for v1 when its files are there, else acc.
        validate: check every key and shape of every weights file (reads only headers and
            memory-maps the `.pth` files).

    Raises:
        FileNotFoundError: the folder or a file is missing (the message names each missing file
            and where it goes).
        ValueError (WeightFileError): a file has another layout, or the folder belongs to another
            family (Hallo, EchoMimic V2, an EMO checkpoint).
    """
    if variant not in (None, *VARIANT_FILES):
        raise ValueError(f"read_echomimic_folder: variant must be one of {sorted(VARIANT_FILES)} or None, "
                         f"got {variant!r}")
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"EchoMimic folder {folder} does not exist; give the path of {RELEASE}.")
    if folder.is_file():
        raise WeightFileError(f"EchoMimic needs its pretrained_weights folder, not a file: {folder} is "
                              f"{_describe_file(folder)}.")
    present = tuple(v for v, files in VARIANT_FILES.items() if (folder / files["denoising_unet"][0]).is_file())
    if variant is None:
        variant = present[0] if present else "v1"
        if len(present) > 1:
            logger.info("EchoMimic folder %s holds %s weights; using %s", folder, " and ".join(present), variant)
    wanted = {**VARIANT_FILES[variant], **SHARED_FILES}
    missing = [(name, what) for name, what in wanted.values() if not (folder / name).exists()]
    if missing:
        other = _other_family(folder)
        if other:
            raise WeightFileError(f"{folder} is not an EchoMimic pretrained_weights folder: it is {other}.")
        hint = ""
        if (folder / "pretrained_weights").is_dir():
            hint = f" It has a pretrained_weights subfolder: give {folder / 'pretrained_weights'} instead."
        elif variant not in present and present:
            hint = f" The folder holds the {' and '.join(present)} weights: choose variant {present[0]!r}."
        elif (folder / "denoising_unet_pose.pth").is_file() and not present:
            hint = " It holds only the pose variant (denoising_unet_pose.pth), which is not supported."
        lines = "; ".join(f"{name} ({what}) goes at {folder / name}" for name, what in missing)
        raise FileNotFoundError(f"EchoMimic folder {folder} ({variant}) is missing {len(missing)} file(s): {lines}. "
                                f"Copy them from {RELEASE} without renaming.{hint}")
    paths = {role: folder / name for role, (name, _) in wanted.items()}
    _, unet_config = read_folder_config(paths["unet_config"].parent, "EchoMimic UNet config",
                                        ("_class_name", "UNet2DConditionModel"), "a UNet2DConditionModel",
                                        f"copy {SHARED_FILES['unet_config'][0]} from {RELEASE}")
    _, vae_config = read_folder_config(paths["vae"], "EchoMimic VAE", ("_class_name", "AutoencoderKL"),
                                       "an AutoencoderKL", f"copy sd-vae-ft-mse from {RELEASE}")
    weights_in_folder(paths["vae"], ("diffusion_pytorch_model",), "EchoMimic VAE")
    inventory = EchoMimicFolder(folder=folder, variant=variant, variants=present, paths=paths, unet_config=unet_config)
    if validate:
        inventory.validate()
    return inventory


# --------------------------------------------------------------------------------------------------
# Naming what is there instead
# --------------------------------------------------------------------------------------------------


def _other_family(folder: Path) -> Optional[str]:
    """What a folder that is not EchoMimic's holds, in words, or None."""
    if (folder / "hallo" / "net.pth").is_file() or (folder / "net.pth").is_file():
        return "Hallo's pretrained_models folder (it has hallo/net.pth); load it with the Hallo loader"
    if (folder / "pose_encoder.pth").is_file() or (folder / "audio_processor" / "tiny.pt").is_file():
        return "EchoMimic V2's pretrained_weights (pose_encoder.pth, audio_processor/tiny.pt); V2 is not supported"
    for path in sorted(folder.glob("*.safetensors")):
        if "EMO checkpoint" in _describe_file(path):
            return f"a folder holding an EMO checkpoint ({path.name}); load it with the EMO model loader"
    return None


def _describe_file(path: Path) -> str:
    try:
        return _what_weights(open_weights(path, "file").meta_view())
    except (WeightFileError, OSError) as error:
        return f"not a weights file ({error})"


def _what_weights(view: dict) -> str:
    keys = set(view)
    if {"reference_unet.", "denoising_unet.", "audioproj."} <= {k.split(".")[0] + "." for k in keys}:
        return "Hallo's net.pth (reference_unet, denoising_unet, face_locator, imageproj and audioproj in one file)"
    return describe_weights(view)


def _refuse_other_families(path: Path, shapes: dict[str, Shape], role: str) -> None:
    """Clear errors for files that are another family's or another variant's."""
    view = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    text = _what_weights(view)
    if text.startswith(("Hallo", "an EMO checkpoint")):
        raise WeightFileError(f"{path} is {text}, not EchoMimic's {role.replace('_', ' ')}.")
    if role == "face_locator" and len(shapes.get("conv_in.weight", ())) == 4 and shapes["conv_in.weight"][1] == 3:
        raise WeightFileError(f"{path} takes 3 input channels: it is the pose variant's face locator "
                              "(face_locator_pose.pth); the audio-driven pipelines use face_locator.pth (1 channel).")
