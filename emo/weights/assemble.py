"""Assemble an EMO checkpoint from pretrained components: the starting point of training.

The model is built on the meta device (a full sd15 EMO model is ~2.3 B parameters: ~9 GB in
fp32), the components are loaded into it (emo.weights.components), and only the layers no
component provides get real tensors, initialised as the modules' constructors do (as the
paper initialises them):
- face locator, audio projection, speed encoder: new (the face locator's output conv is zero,
  so it starts as a no-op);
- speed layers inside the temporal modules: new, output projection zero (keeps AnimateDiff's
  behaviour);
- temporal modules the motion module does not provide (all of them without one; the mid-block
  one with AnimateDiff v1/v3): AnimateDiff's initialisation, zero output = identity.
"""

from __future__ import annotations

import logging
import os

import torch

from ..checkpoints import parse_dtype
from ..config import EMOConfig
from ..model import EMOModel
from ..models.initialization import fresh_state
from . import layout
from .animatediff import site_of
from .components import LoadReport, load_components

logger = logging.getLogger(__name__)


def initialise_new_layers(model: EMOModel, *, seed: int = 0) -> list[str]:
    """Give every tensor still on the meta device its constructor's initialisation on the CPU, seeded
    (`emo.models.initialization.fresh_state`: each owning layer's own reset, then the
    zero-initialisations its parents declare). Returns the modules that got new tensors
    (top-level components, or single temporal modules)."""
    meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if not meta:
        return []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = fresh_state(model, meta)
    layout.put(model, state)
    return sorted({site_of(k) or k.split(".")[0] for k in meta})


def assemble(config: EMOConfig | str, *, sd15: str | os.PathLike, wav2vec2: str | os.PathLike,
             vae: str | os.PathLike | None = None, motion_module: str | os.PathLike | None = None,
             sd15_ema: bool = False, seed: int = 0,
             dtype: torch.dtype | str | None = None) -> tuple[EMOModel, LoadReport]:
    """Build an EMO model on the CPU from components (see module docstring). `config` is an
    EMOConfig or a preset name; `dtype` that of every floating tensor (default fp32).
    Returns the model (eval mode) and what was loaded."""
    if isinstance(config, str):
        config = EMOConfig.preset(config)
    dtype = parse_dtype(dtype)
    with torch.device("meta"):
        model = EMOModel(config)
    if dtype is not None:
        model.to(dtype)
    report = load_components(model, sd15=sd15, vae=vae, wav2vec2=wav2vec2, motion_module=motion_module,
                             sd15_ema=sd15_ema)
    new = initialise_new_layers(model, seed=seed)
    temporal = [n for n in new if ".motion_modules." in n]
    report.notes.append(
        f"freshly initialised (seed {seed}): {', '.join(n for n in new if n not in temporal)}, and "
        f"{'the speed layers of' if motion_module is not None else 'all of'} {len(temporal)} temporal modules")
    return model.eval(), report


def describe_assembly(report: LoadReport, motion_module_given: bool, seed: int) -> str:
    """The free-text description stored in the checkpoint's metadata."""
    parts = [f"{name} from {path.name}" for name, path in report.sources.items()]
    if not motion_module_given:
        parts.append("temporal modules freshly initialised (no motion module given)")
    return ("EMO initialisation assembled from pretrained components (not trained for EMO yet): "
            + "; ".join(parts)
            + f"; face locator, audio projection, speed encoder and speed layers new (seed {seed}).")
