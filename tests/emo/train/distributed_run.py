"""Run by test_distributed.py under `accelerate launch` (and in-process for one process).

    distributed_run.py GRADIENTS_OUT OUTPUT_DIR CONFIG KEY=VALUE...

Sets up a Trainer, does its first optimizer step while recording the gradients the optimizer
receives (after DDP's all-reduce and the gradient accumulation) and saves them from process 0;
then runs `python -m emo train` with the same config into OUTPUT_DIR (state, log, export).
"""

from __future__ import annotations

import sys

import torch


def first_step(config_path: str, overrides: list[str]):
    """(trainer, gradients seen by the first optimizer step, that step's metrics)."""
    from emo.train.config import load_train_config
    from emo.train.trainer import Trainer

    trainer = Trainer(load_train_config(config_path, overrides)).setup()
    seen: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.update({name: p.grad.detach().cpu().clone() for name, p in trainer.trainable.items()
                     if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    metrics = trainer.optimizer_step(trainer.batches())
    trainer.optimizer.step = step
    return trainer, seen, metrics


def main(argv: list[str]) -> int:
    torch.backends.mkldnn.enabled = False  # see conftest.small_cpu_footprint
    torch.set_num_threads(1)
    out, output_dir, config_path, *overrides = argv
    trainer, grads, metrics = first_step(config_path, [*overrides, f"output_dir={output_dir}/first-step"])
    if trainer.accelerator.is_main_process:
        torch.save({"grads": grads, "processes": trainer.accelerator.num_processes, "loss": metrics["loss"]}, out)
    from emo.cli import main as emo_main  # what `accelerate launch -m emo train ...` runs

    args = ["train", "-q", "--config", config_path, "--set", f"output_dir={output_dir}"]
    for override in overrides:
        args += ["--set", override]
    return emo_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
