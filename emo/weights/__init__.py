"""Pretrained weights from the files users already have: SD1.5, VAE, wav2vec2, AnimateDiff.

    from emo.weights import load_components
    report = load_components(model, sd15="v1-5-pruned-emaonly.safetensors",
                             vae="vae-ft-mse-840000-ema-pruned.safetensors",
                             wav2vec2="wav2vec2-base-960h/", motion_module="mm_sd_v15_v2.ckpt")

`emo.weights.assemble.assemble` builds a whole EMO model from them (`python -m emo assemble`). Modules: files (safe,
lazy reading), layout (key plans, strict checks), identify (what a file is), one per source
(sd15, vae, wav2vec2, animatediff), components (load_components), assemble, commands (CLI);
(Hallo's released checkpoints convert in emo.families.hallo.convert.)
"""

import importlib

# Imported on first use (PEP 562), so `python -m emo --help`, which imports the command module
# of this package, does not pay for torch/diffusers.
# (`assemble` the function is not among them: the name is its submodule's; import it from
# emo.weights.assemble.)
_EXPORTS = {
    "initialise_new_layers": "assemble",
    "LoadReport": "components", "load_components": "components", "plan_components": "components",
    "WeightFile": "files", "WeightFileError": "files", "open_weights": "files",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LoadReport", "WeightFile", "WeightFileError", "initialise_new_layers",
           "load_components", "open_weights", "plan_components"]
