"""Where each stored tensor goes in the model, checked strictly before any data is read.

A converter (one of diffusers' LDM -> diffusers functions, or a rename) is run on a *meta view*
of the file: empty tensors with the stored shapes, one object per key. Converters only move
tensors between keys and slice 1x1 convolutions to linears, so following the objects through
gives a `Plan`: model key <- (file key, shape). The plan is compared with what the model
expects (missing, unexpected and mismatched keys, all listed) and only then are the planned
tensors read, one at a time, from the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..keys import mismatch
from .files import WeightFileError

Shape = tuple[int, ...]


@dataclass
class Plan:
    """How one component is filled from one file. Keys are the component's own names
    (diffusers names for a UNet, ...), without the EMOModel prefix."""

    what: str  # "SD1.5 UNet", "VAE", ... for messages
    path: Path
    source: Mapping[str, torch.Tensor]  # the file (a WeightFile, or a dict in tests)
    origins: dict[str, str]  # component key -> file key
    shapes: dict[str, Shape]  # component key -> shape after conversion
    unused: set[str] = field(default_factory=set)  # file keys of this component that map nowhere
    computed: dict[str, torch.Tensor] = field(default_factory=dict)  # made here, not read (pos. tables)
    found: str = ""  # what the file looks like (identify.describe_weights)
    notes: list[str] = field(default_factory=list)  # what was chosen or skipped (logged as info)
    warnings: list[str] = field(default_factory=list)  # what may hurt results (logged as warnings)

    def keys(self) -> set[str]:
        return self.origins.keys() | self.computed.keys()


def _root(tensor: torch.Tensor) -> torch.Tensor:
    while tensor._base is not None:
        tensor = tensor._base
    return tensor


def trace(view: Mapping[str, torch.Tensor], convert: Callable[[dict], dict]) -> tuple[dict, dict]:
    """Run `convert` on a meta view and return (target key -> file key, target key -> shape)."""
    origin = {id(t): k for k, t in view.items()}
    converted = convert(dict(view))
    sources, shapes = {}, {}
    for key, tensor in converted.items():
        if tensor is None:  # diffusers' converters write checkpoint.get(k) even when k is absent
            continue
        source = origin.get(id(_root(tensor)))
        if source is None:
            raise RuntimeError(f"weights conversion made a new tensor for {key}; cannot trace it")
        sources[key] = source
        shapes[key] = tuple(tensor.shape)
    return sources, shapes


def renamed(view: Mapping[str, torch.Tensor], rename: Callable[[str], str | None],
            *, what: str, path: Path) -> tuple[dict, dict, set]:
    """(target -> file key, target -> shape, unused file keys) for a plain key rename
    (`rename` returns None for keys that go nowhere)."""
    origins, shapes, unused = {}, {}, set()
    for key, tensor in view.items():
        target = rename(key)
        if target is None:
            unused.add(key)
            continue
        if target in origins:
            raise WeightFileError(f"{what}: {path} has two tensors for {target}: {origins[target]} and {key}.")
        origins[target] = key
        shapes[target] = tuple(tensor.shape)
    return origins, shapes, unused


def check(plan: Plan, expected: Mapping[str, Shape], *, expected_text: str,
          allow_missing: Iterable[str] = ()) -> None:
    """Raise a WeightFileError listing every difference between the plan and `expected`
    (component key -> shape); keys in `allow_missing` may stay unfilled."""
    allowed = set(allow_missing)
    shapes = {**plan.shapes, **{k: tuple(t.shape) for k, t in plan.computed.items()}}
    problems = mismatch(expected, shapes, may_be_missing=allowed.__contains__, also_unexpected=plan.unused)
    if not problems:
        return
    found = f" The file looks like {plan.found}." if plan.found else ""
    raise WeightFileError(
        f"{plan.what}: {plan.path} does not fit; expected {expected_text}.{found} "
        + problems + ". Give the file the component was made for."
    )


def read(plan: Plan) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (component key, tensor in the planned shape), reading one file tensor at a time."""
    for key, file_key in plan.origins.items():
        tensor = plan.source[file_key]
        shape = plan.shapes[key]
        yield key, (tensor if tuple(tensor.shape) == shape else tensor.reshape(shape))
    yield from plan.computed.items()


def put(model: nn.Module, tensors: Mapping[str, torch.Tensor], device: torch.device | str | None = None) -> None:
    """Write `tensors` (full model keys) into `model`, each in the dtype the model has there.

    A tensor still on the meta device is replaced by a new one on `device` (default CPU); a real
    one is overwritten in place (same Parameter object, same device). Every value is copied, so
    the ReferenceNet and the backbone never share storage even when filled from one file.
    """
    for key, value in tensors.items():
        module_name, _, leaf = key.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if leaf in module._parameters:
            old = module._parameters[leaf]
        elif leaf in module._buffers:
            old = module._buffers[leaf]
        else:
            raise KeyError(f"put: the model has no tensor {key}")
        if old.shape != value.shape:
            raise RuntimeError(f"put: {key} is {list(value.shape)} but the model has {list(old.shape)}")
        if old.is_meta:
            new = value.to(device=device or "cpu", dtype=old.dtype, copy=True)
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            setattr(module, leaf, new)
        else:
            with torch.no_grad():
                old.copy_(value)


def check_config(found: dict, wanted: dict, fields: dict, *, what: str, path: Path, hint: str) -> None:
    """Compare a folder's config.json with the model's; list every field that differs."""
    diffs = []
    for name, default in fields.items():
        have = found.get(name, default)
        want = wanted.get(name, default)
        if isinstance(want, tuple | list):
            # diffusers allows one scalar for a per-level value
            have = list(have) if isinstance(have, tuple | list) else [have] * len(want)
            want = list(want)
        if have != want:
            diffs.append(f"{name}: file {have}, EMO needs {want}")
    if diffs:
        raise WeightFileError(f"{what}: {path} describes another architecture ({'; '.join(diffs)}). {hint}")
