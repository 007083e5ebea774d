"""Pretrained weights from the files users already have: SD1.5, VAE, wav2vec2, AnimateDiff.

    from emo.weights import load_components
    report = load_components(model, sd15="v1-5-pruned-emaonly.safetensors",
                             vae="vae-ft-mse-840000-ema-pruned.safetensors",
                             wav2vec2="wav2vec2-base-960h/", motion_module="mm_sd_v15_v2.ckpt")

`assemble` builds a whole EMO model from them (`python -m emo assemble`). Modules: files (safe,
lazy reading), layout (key plans, strict checks), identify (what a file is), one per source
(sd15, vae, wav2vec2, animatediff), components (load_components), assemble, commands (CLI);
hallo converts Hallo's released checkpoints.
"""

from .assemble import assemble, initialise_new_layers
from .components import LoadReport, load_components, plan_components
from .files import WeightFile, WeightFileError, open_weights

__all__ = ["LoadReport", "WeightFile", "WeightFileError", "assemble", "initialise_new_layers",
           "load_components", "open_weights", "plan_components"]
