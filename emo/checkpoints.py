"""EMO checkpoint files: one `.safetensors` holding every weight, the config JSON in its metadata.

Layout: the state dict of `EMOModel` (`reference_net.*`, `backbone.*`, `face_locator.*`,
`audio_projection.*`, `speed_encoder.*`, `vae.*`, `audio_encoder.*`). Metadata keys:
`format` = "emo-checkpoint", `format_version`, `emo_config` (JSON of `EMOConfig`), and
optional free-form `description`. Loading is strict: every key must be present with its shape.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import EMOConfig
from .keys import mismatch
from .model import EMOModel
from .runtime.devices import parse_dtype
from .runtime.output import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "emo-checkpoint"
FORMAT_VERSION = "1"

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""Files shipped with the library: the demo checkpoint and its sample portrait and voice."""

DEMO_CHECKPOINT = ASSETS_DIR / "emo-demo.safetensors"
"""A small demonstration model trained on synthetic drawn faces (`emo synth`) by
scripts/train_demo_model.sh: `python -m emo generate` uses it when no --checkpoint is given. It
animates such faces at 64 px; it is not a model of real people."""

class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says why and what to do."""


def save_checkpoint(model: EMOModel, path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
                    description: str | None = None) -> Path:
    """Write `model` to `path` atomically (a temporary file renamed at the end)."""
    path = Path(path)
    dtype = parse_dtype(dtype)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().cpu()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "emo_config": model.config.to_json()}
    if description:
        metadata["description"] = description
    with atomic_output(path) as temp:
        save_file(state, str(temp), metadata=metadata)
    logger.info("wrote EMO checkpoint %s (%d tensors)", path, len(state))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of an EMO checkpoint, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"EMO checkpoint not found: {path}. Pass the path of a .safetensors file written by "
            "`python -m emo new-checkpoint`, `convert` or `assemble`."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"{path} is not a readable .safetensors file ({error}); the file may be truncated "
            "or in another format - download or convert it again."
        ) from error
    if metadata.get("format") != FORMAT or "emo_config" not in metadata:
        raise CheckpointError(
            f"{path} is a .safetensors file but not an EMO checkpoint (no EMO config in its "
            "metadata). Convert other models with `python -m emo convert` or `assemble`."
        )
    return metadata


def read_config(path: str | os.PathLike) -> EMOConfig:
    return EMOConfig.from_json(read_metadata(path)["emo_config"])


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> EMOModel:
    """Build the model a checkpoint's config describes and load its weights strictly.

    The model is created on the meta device and the file's tensors are assigned in, so no
    memory is spent on a random initialisation. Returns the model in eval mode.
    """
    path = Path(path)
    metadata = read_metadata(path)
    config = EMOConfig.from_json(metadata["emo_config"])
    dtype = parse_dtype(dtype)
    with torch.device("meta"):
        model = EMOModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(path), framework="pt") as handle:
        found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    problems = mismatch(expected, found)
    if problems:
        raise CheckpointError(
            f"{path} does not match the EMO model its config describes ({problems}). "
            f"Expected config: {config.to_json()}. Re-create the file with this version's "
            "`python -m emo new-checkpoint/convert/assemble`."
        )
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            state[key] = tensor.to(device)
    model.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:  # a buffer that is not saved would stay unallocated: a bug, not a user error
        raise RuntimeError(f"load_checkpoint: tensors left on the meta device: {leftovers[:8]}")
    return model.eval()


def describe(path: str | os.PathLike) -> dict:
    """A short summary of a checkpoint (for the CLI and the model loader node)."""
    metadata = read_metadata(path)
    config = json.loads(metadata["emo_config"])
    return {"name": config.get("name"), "description": metadata.get("description", ""),
            "defaults": config.get("defaults", {}), "family": config.get("family", "emo"),
            # Families with several releases (Hallo: hallo, hallo2, joyhallo) name theirs here.
            "variant": (config.get("family_options") or {}).get("variant")}
