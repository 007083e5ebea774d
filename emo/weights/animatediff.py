"""AnimateDiff motion modules into EMO's temporal modules.

EMO's temporal modules carry AnimateDiff's parameter names (emo/models/temporal.py), so an
AnimateDiff file (`mm_sd_v15_v2.ckpt`, `.safetensors`, as in ComfyUI's `animatediff_models/`)
maps key for key onto `backbone.*.motion_modules.*`. Also accepted: diffusers' `MotionAdapter`
layout (a folder or file), renamed with the inverse of diffusers' own
`convert_animatediff_checkpoint_to_diffusers`.

- Positional tables (`pos_encoder.pe`, a fixed sinusoid) are regenerated at EMO's length
  (`TemporalConfig.max_frames`) whatever length the file stores (v1: 24, v2: 32); a stored
  table that is not the sinusoid is kept for the positions it covers, with a warning.
- A module the file does not have (v1 and v3 have no mid-block module) stays at its
  initialisation, which is an identity (zero output projection); this is logged.
- EMO's speed layers inside the temporal modules are not AnimateDiff's and are never read.
"""

from __future__ import annotations

import functools
import logging
import os
import re

import torch

from ..config import EMOConfig
from ..models.temporal import SPEED_KEY_MARKER, sinusoidal_table
from . import layout
from .files import WeightFile, WeightFileError, open_folder_weights, open_weights, existing_path
from .identify import describe_weights
from .layout import Plan, Shape

logger = logging.getLogger(__name__)

WHAT = "AnimateDiff motion module"
PE_SUFFIX = ".pos_encoder.pe"
_SITE = re.compile(r"^(.*?\.motion_modules\.\d+)\.")
_DIFFUSERS_PE = re.compile(r"\.attention_blocks\.\d+\.pos_encoder\.pe$")


def motion_keys(backbone_shapes: dict[str, Shape]) -> dict[str, Shape]:
    """The backbone's keys that an AnimateDiff file fills (temporal modules minus speed layers)."""
    return {k: s for k, s in backbone_shapes.items() if ".motion_modules." in k and SPEED_KEY_MARKER not in k}


def site_of(key: str) -> str | None:
    match = _SITE.match(key)
    return match.group(1) if match else None


def expected_text(config: EMOConfig) -> str:
    ch = list(config.unet.block_out_channels)
    return (f"an SD1.5 AnimateDiff motion module (temporal modules of widths {ch}, "
            f"{config.temporal.num_attention_heads} heads), e.g. mm_sd_v15_v2.ckpt")


def _diffusers_names(ours: list[str]) -> dict[str, str]:
    """diffusers MotionAdapter key -> EMO key, from diffusers' own original->diffusers renames
    (positional tables excluded: see `_diffusers_pe_key`)."""
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    return convert_animatediff_checkpoint_to_diffusers({k: k for k in ours if not k.endswith(PE_SUFFIX)})


def _diffusers_pe_key(key: str) -> str:
    # diffusers keeps one table per transformer block (`pos_embed.pe`), used by both attentions.
    return _DIFFUSERS_PE.sub(".pos_embed.pe", key).replace(".temporal_transformer", "")


@functools.lru_cache(maxsize=16)
def _sinusoid(length: int, channels: int) -> torch.Tensor:
    return sinusoidal_table(length, channels)  # (callers clone before changing it)


def _positional_table(stored: torch.Tensor | None, length: int, channels: int) -> tuple[torch.Tensor, float]:
    """EMO's table of `length` frames and how far the stored table is from the formula (0 when
    it is the formula up to the file's precision; then the stored values are not needed)."""
    table = _sinusoid(length, channels).clone()
    if stored is None or stored.is_meta:  # (layout tests run on meta tensors: shapes, no values)
        return table, 0.0
    # fp16/bf16 files round the table: allow a couple of units in the last place.
    tolerance = max(2 * torch.finfo(stored.dtype).eps, 1e-5) if stored.dtype.is_floating_point else 1e-5
    stored = stored.float().reshape(1, -1, channels)
    error = (stored - _sinusoid(stored.shape[1], channels)).abs().max().item()
    if error <= tolerance:
        return table, 0.0
    n = min(stored.shape[1], length)
    table[:, :n] = stored[:, :n]
    return table, error


def expected_length(expected: dict[str, Shape]) -> int:
    return next(s[1] for k, s in expected.items() if k.endswith(PE_SUFFIX))


def plan_motion_module(path: str | os.PathLike | WeightFile, config: EMOConfig,
                       expected: dict[str, Shape]) -> Plan:
    """Plan the temporal modules (backbone keys, see `motion_keys`) from an AnimateDiff file."""
    text = expected_text(config)
    if isinstance(path, WeightFile):
        source = path
    else:
        path = existing_path(path, WHAT, "give e.g. mm_sd_v15_v2.ckpt or "
                             "mm_sd_v15_v2.safetensors (or a diffusers MotionAdapter folder).")
        source = (open_folder_weights(path, ("diffusion_pytorch_model",), WHAT) if path.is_dir()
                  else open_weights(path, WHAT))
    view = source.meta_view()
    found = describe_weights(view)
    name = source.path.name
    if any(".temporal_transformer." in k for k in view):
        def rename(k):
            return k

        def pe_key(k):
            return k
    elif any(".motion_modules." in k for k in view):
        diffusers_names = _diffusers_names(list(expected))

        def rename(k):
            return diffusers_names.get(k, k)

        pe_key = _diffusers_pe_key
    else:
        raise WeightFileError(f"{WHAT}: no motion-module weights in {source.path}; it looks like {found}. "
                              f"EMO needs {text}.")
    file_pe = {k for k in view if k.endswith((PE_SUFFIX, ".pos_embed.pe"))}
    stored_pe = {k: pe_key(k) for k in expected if k.endswith(PE_SUFFIX) and pe_key(k) in file_pe}
    origins, shapes, unused = layout.renamed(
        {k: t for k, t in view.items() if k not in file_pe}, rename, what=WHAT, path=source.path)
    unused |= file_pe - set(stored_pe.values())
    plan = Plan(WHAT, source.path, source, origins, shapes, unused, found=found)

    # Modules the file has must be complete. Only the mid-block module may be absent (AnimateDiff
    # v1 and v3 have none): it keeps its current weights (a fresh module is an identity).
    present = {site_of(k) for k in [*origins, *stored_pe]} - {None}
    if not present & {site_of(k) for k in expected}:
        raise WeightFileError(f"{WHAT}: {source.path} has no motion module EMO can use; it looks like "
                              f"{found}. EMO needs {text}.")
    absent_keys = [k for k in expected if site_of(k) not in present and k.startswith("mid_block.")]
    absent_sites = sorted({site_of(k) for k in absent_keys})
    if absent_sites:
        plan.notes.append(f"{name} has no {', '.join(absent_sites)} (AnimateDiff v1/v3 have no mid-block "
                          "module): it keeps its current weights; a fresh one is an identity until trained")

    lengths, errors = set(), []
    for key, shape in expected.items():
        if key.endswith(PE_SUFFIX) and site_of(key) in present:
            stored = source[stored_pe[key]] if key in stored_pe else None
            if stored is not None and stored.shape[-1] != shape[2]:
                plan.shapes[key] = tuple(stored.shape)  # a wrong width: the check below lists it
                plan.origins[key] = stored_pe[key]
                continue
            plan.computed[key], error = _positional_table(stored, shape[1], shape[2])
            errors.append(error)
            if stored is not None:
                lengths.add(stored.shape[-2])
    if present and not stored_pe:
        plan.notes.append(f"{name} stores no positional tables; made them from the sinusoid formula")
    for stored_length in sorted(lengths - {expected_length(expected)}):
        plan.notes.append(f"{name}: stored positional tables have {stored_length} frames; EMO's hold "
                          f"{expected_length(expected)} (regenerated from the sinusoid formula, which "
                          "also covers longer sequences)")
    differing = [e for e in errors if e > 0]
    if differing:
        plan.warnings.append(f"{name}: {len(differing)} stored positional tables differ from the sinusoid "
                             f"formula (by up to {max(differing):.3g}); kept their stored values for the "
                             "frames they cover")
    layout.check(plan, expected, expected_text=text, allow_missing=absent_keys)
    return plan
