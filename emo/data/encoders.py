"""The frozen encoders dataset preparation needs (wav2vec2 and the VAE), taken from an EMO
checkpoint without loading its UNets, and fingerprints that tie a dataset to them.

Features computed with one wav2vec2 (or latents with one VAE) are only valid for a model that uses
the same one, so the dataset records a fingerprint of each and training checks it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open

from ..checkpoints import read_config
from ..config import EMOConfig
from ..model import EMOModel


def load_components(path, names: tuple[str, ...], *, device="cpu") -> tuple[EMOConfig, dict[str, torch.nn.Module]]:
    """Load only the named top-level components of an EMO checkpoint (e.g. "audio_encoder",
    "vae"), strictly, in float32, in eval mode. The rest of the model is never allocated."""
    config = read_config(path)
    with torch.device("meta"):
        model = EMOModel(config)
    modules = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = set(handle.keys())
        for name in names:
            module = getattr(model, name)
            expected = module.state_dict().keys()
            prefix = name + "."
            found = {k[len(prefix):] for k in keys if k.startswith(prefix)}
            if found != set(expected):
                missing = sorted(set(expected) - found)[:5]
                raise ValueError(f"{path}: the {name} weights do not match its config (missing {missing}); "
                                 "re-create the checkpoint with this version")
            state = {k: handle.get_tensor(prefix + k).float() for k in expected}
            module.load_state_dict(state, strict=True, assign=True)
            modules[name] = module.to(device).eval().requires_grad_(False)
    return config, modules


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights (as float32), stable across files and devices."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_path(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EMO checkpoint not found: {path}; prepare needs the checkpoint you will "
                                "train from (its wav2vec2 and VAE), e.g. `python -m emo new-checkpoint`")
    return path
