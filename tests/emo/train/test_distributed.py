"""Two processes through `accelerate launch` (DDP on the CPU, gloo) against one process with
gradient accumulation, on the same global batch of 2 samples: the optimizer sees the same
gradients; then `python -m emo train` runs in the two processes to the end (state, log, export)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import torch

from emo.checkpoints import load_checkpoint
from tests.emo.train.distributed_run import first_step
from tests.helpers import REPO

SCRIPT = REPO / "tests" / "emo" / "train" / "distributed_run.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_with_accumulation(prepared, tiny_checkpoint, tmp_path):
    config = str(REPO / "configs" / "train" / "tiny_stage2.yaml")
    overrides = [f"init={tiny_checkpoint}", f"data.root={prepared}", "batch_size=2", "checkpoints.every=0",
                 "logging.tensorboard=false"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    # Without GPUs, --multi_gpu starts torch.distributed processes and the trainer asks accelerate
    # for DDP on the CPU (gloo); `--cpu` would ask for MPI instead.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(SCRIPT), str(tmp_path / "grads.pt"),
               str(tmp_path / "two"), config, *overrides, "max_steps=2"]
    # Own process group, so a hung run is ended with all the processes the launcher started.
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError("the 2-process run did not finish in 240 s:\n" + output[-3000:]) from None
    assert process.returncode == 0, output[-6000:]

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
