"""`load_components`: fill an EMOModel from the pretrained parts users already have.

    SD1.5 UNet      -> reference_net.*  and  backbone.* (spatial layers)
    SD1.5 VAE       -> vae.*          (from the SD file, or from `vae=`)
    wav2vec2        -> audio_encoder.*
    AnimateDiff     -> backbone.*.motion_modules.* (not the speed layers)

Every component is planned and checked (keys and shapes, against the model itself) before any
tensor data is read, so a wrong file fails in seconds. Tensors are converted to the dtype the
model has at each key; a model built on the meta device gets real tensors only where loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model import EMOModel
from . import layout
from .animatediff import motion_keys, plan_motion_module
from .files import WeightFile
from .layout import Plan
from .sd15 import plan_sd15
from .vae import plan_vae_path
from .wav2vec2 import plan_wav2vec2

logger = logging.getLogger(__name__)

# A path, or a WeightFile (e.g. WeightFile.from_tensors of tensors already in memory).
Source = str | os.PathLike | WeightFile


@dataclass
class LoadReport:
    """What `load_components` did, for logs, checkpoint descriptions and UI messages."""

    sources: dict[str, Path] = field(default_factory=dict)  # "unet", "vae", "wav2vec2", "motion_module"
    written: set[str] = field(default_factory=set)  # model keys that were filled
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{name} <- {path.name}" for name, path in self.sources.items()]
        return "; ".join(parts) if parts else "nothing loaded"


def _part(shapes: dict, prefix: str) -> dict:
    return {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix)}


def plan_components(model: EMOModel, *, sd15: Source | None = None, vae: Source | None = None,
                    wav2vec2: Source | None = None, motion_module: Source | None = None,
                    sd15_ema: bool = False) -> list[tuple[str, Plan, tuple[str, ...]]]:
    """Check every given component against `model` without reading tensor data.
    Returns (component name, plan, model prefixes the plan fills)."""
    config = model.config
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    plans: list[tuple[str, Plan, tuple[str, ...]]] = []
    if sd15 is not None:
        unet_expected = _part(shapes, "reference_net.")
        unet, sd_vae = plan_sd15(sd15, config, unet_expected, _part(shapes, "vae.") if vae is None else None,
                                 ema=sd15_ema)
        lacking = unet.keys() - _part(shapes, "backbone.").keys()
        if lacking:  # the two UNets must share SD1.5's layout; a model-code bug otherwise
            raise RuntimeError(f"load_components: the backbone lacks SD1.5 UNet keys {sorted(lacking)[:8]}")
        plans.append(("unet", unet, ("reference_net.", "backbone.")))
        if sd_vae is not None:
            plans.append(("vae", sd_vae, ("vae.",)))
        elif vae is None:
            if any(t.is_meta for t in model.vae.parameters()):
                raise ValueError(f"SD1.5 checkpoint: {unet.path} holds no VAE (first_stage_model.*) and no "
                                 "VAE was given; pass one (e.g. vae-ft-mse-840000-ema-pruned.safetensors).")
            logger.info("%s holds no VAE; the model keeps its VAE", unet.path.name)
    if vae is not None:
        plans.append(("vae", plan_vae_path(vae, config, _part(shapes, "vae.")), ("vae.",)))
    if wav2vec2 is not None:
        plans.append(("wav2vec2", plan_wav2vec2(wav2vec2, config, _part(shapes, "audio_encoder.")),
                      ("audio_encoder.",)))
    if motion_module is not None:
        expected = motion_keys(_part(shapes, "backbone."))
        plans.append(("motion_module", plan_motion_module(motion_module, config, expected), ("backbone.",)))
    return plans


def load_components(model: EMOModel, *, sd15: Source | None = None, vae: Source | None = None,
                    wav2vec2: Source | None = None, motion_module: Source | None = None,
                    sd15_ema: bool = False, device: torch.device | str | None = None) -> LoadReport:
    """Load pretrained components into `model` (in place) and say what was done.

    sd15: an SD1.5 checkpoint file (LDM layout, .safetensors/.ckpt), a UNet-only file, or a
        diffusers folder; its VAE is loaded too unless `vae` is given.
    vae: a VAE file (LDM or diffusers layout, old or new attention names) or diffusers folder.
    wav2vec2: a Hugging Face wav2vec2 folder, or a single weights file (ComfyUI audio_encoders).
    motion_module: an AnimateDiff motion module (mm_sd_v15_v2.ckpt/.safetensors, v1, v3) or a
        diffusers MotionAdapter.
    sd15_ema: use the EMA copy of the UNet when the checkpoint has one.
    device: where tensors of a meta-device model are created (default CPU); tensors that
        already exist are overwritten where they are.
    Raises FileNotFoundError / ValueError (WeightFileError) naming the file and the mismatch.
    """
    plans = plan_components(model, sd15=sd15, vae=vae, wav2vec2=wav2vec2, motion_module=motion_module,
                            sd15_ema=sd15_ema)
    report = LoadReport()
    given = {"unet": sd15, "vae": vae if vae is not None else sd15, "wav2vec2": wav2vec2,
             "motion_module": motion_module}
    given = {k: v for k, v in given.items() if isinstance(v, str | os.PathLike)}
    for name, plan, prefixes in plans:
        for note in plan.notes:
            logger.info("%s: %s", plan.what, note)
        for warning in plan.warnings:
            logger.warning("%s: %s", plan.what, warning)
        report.notes += plan.notes
        report.warnings += plan.warnings
        report.sources[name] = Path(given[name]).expanduser() if given.get(name) is not None else plan.path
        for key, tensor in layout.read(plan):
            targets = {prefix + key: tensor for prefix in prefixes}
            layout.put(model, targets, device)
            report.written.update(targets)
        logger.info("%s: loaded %d tensors from %s", plan.what, len(plan.keys()), plan.path)
    return report
