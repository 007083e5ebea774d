"""Training EMO (paper §3.3): the three stages on accelerate, from one GPU to many nodes.

- `config`: the YAML config (configs/train/*.yaml) as dataclasses
- `stages`: which parameter groups each stage trains
- `data`: training samples from a prepared dataset (emo/data), reproducible by draw number
- `objective`: the denoising loss with condition dropout, as one module for DDP
- `ema`, `trainer`: the loop, training states and exact resume, logs, sample videos, export
- `commands`: `python -m emo prepare` and `python -m emo train`
"""
