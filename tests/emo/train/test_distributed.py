"""Two processes through `accelerate launch` (DDP on the CPU, gloo) against one process with
gradient accumulation, on the same global batch of 2 samples: the optimizer sees the same
gradients; then `python -m emo train` runs in the two processes to the end (state, log, export)."""

from __future__ import annotations

import torch

from emo.checkpoints import load_checkpoint
from tests.emo.train.distributed_run import first_step
from tests.helpers import REPO, accelerate_launch

SCRIPT = REPO / "tests" / "emo" / "train" / "distributed_run.py"


def test_two_processes_match_one_with_accumulation(prepared, tiny_checkpoint, tmp_path):
    config = str(REPO / "configs" / "train" / "tiny_stage2.yaml")
    overrides = [f"init={tiny_checkpoint}", f"data.root={prepared}", "batch_size=2", "checkpoints.every=0",
                 "logging.tensorboard=false"]
    accelerate_launch([SCRIPT, tmp_path / "grads.pt", tmp_path / "two", config, *overrides, "max_steps=2"], tmp_path)

    two = torch.load(tmp_path / "grads.pt", weights_only=True)
    assert two["processes"] == 2
    trainer, grads, metrics = first_step(config, [*overrides, "max_steps=1", "gradient_accumulation_steps=2",
                                                  f"output_dir={tmp_path / 'one'}"])
    assert trainer.accelerator.num_processes == 1
    assert abs(metrics["loss"] - two["loss"]) < 1e-5 * abs(metrics["loss"])
    assert grads.keys() == two["grads"].keys() and len(grads) > 100
    for name, grad in grads.items():  # equal up to float summation order
        error = (two["grads"][name] - grad).norm() / grad.norm().clamp(min=1e-30)
        assert error < 1e-5, (name, float(error))

    load_checkpoint(tmp_path / "two" / "emo-stage2.safetensors")
    assert (tmp_path / "two" / "checkpoints" / "step-0000002").is_dir()
    rows = (tmp_path / "two" / "logs" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["step", "1", "2"]  # written once, by process 0
