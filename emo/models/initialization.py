"""Initial values of selected parameters, without building the whole model.

Converters and `assemble` fill most of a model from existing weights and need the constructor's
values only for the rest (speed layers, face locator, ...). Building a full sd15 model on the
CPU for that would cost ~10 GB, so `fresh_state` builds the model on the meta device and
materialises only the leaf modules that own the requested keys, re-running their own
`reset_parameters`. Classes that zero-initialise some children (so a new layer starts as a
no-op) list them in `ZERO_INIT`; their constructors and `fresh_state` both use it.
"""

from __future__ import annotations

import torch
from torch import nn


def apply_zero_init(module: nn.Module) -> None:
    """Zero every parameter of the children named in `type(module).ZERO_INIT`."""
    with torch.no_grad():
        for name in getattr(type(module), "ZERO_INIT", ()):
            for param in module.get_submodule(name).parameters():
                param.zero_()


def fresh_state(model: nn.Module, keys) -> dict[str, torch.Tensor]:
    """Constructor values of `keys` of `model` (typically built on the meta device), on the CPU.

    Each key's owning module is materialised on the CPU and re-initialised with its
    `reset_parameters()` (or `reset_buffers()`), then zero-initialised if an ancestor's
    `ZERO_INIT` names it. Other parts of `model` are left as they are.
    """
    state = {}
    owners = sorted({key.rsplit(".", 1)[0] if "." in key else "" for key in keys})
    for owner_path in owners:
        owner = model.get_submodule(owner_path)
        owner.to_empty(device="cpu", recurse=False)
        reset = getattr(owner, "reset_parameters", None) or getattr(owner, "reset_buffers", None)
        if reset is None:
            raise RuntimeError(f"fresh_state: {owner_path} ({type(owner).__name__}) cannot re-initialise itself")
        reset()
        _zero_if_listed(model, owner_path)
    for key in keys:
        owner_path, _, name = key.rpartition(".")
        owner = model.get_submodule(owner_path)
        state[key] = getattr(owner, name).detach().clone()
    return state


def _zero_if_listed(model: nn.Module, path: str) -> None:
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        ancestor = model.get_submodule(".".join(parts[:i]))
        child = ".".join(parts[i:])
        if child in getattr(type(ancestor), "ZERO_INIT", ()):
            with torch.no_grad():
                for param in model.get_submodule(path).parameters(recurse=False):
                    param.zero_()
