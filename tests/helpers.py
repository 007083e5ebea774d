"""Test helpers: tiny random models and synthetic media, all made here (no downloads)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMO_SHARED_DIR", REPO.parent / "shared"))
FIXTURES_REQUIRED_ENV = "EMO_REQUIRE_FIXTURES"


def fixtures_required() -> bool:
    """In CI (`.ci/run` sets EMO_REQUIRE_FIXTURES=1, or any CI=true) a missing shared fixture is
    a failure: the parity proofs must never pass by skipping."""
    return bool(os.environ.get(FIXTURES_REQUIRED_ENV)) or os.environ.get("CI", "").lower() in ("1", "true")


def missing_fixture(what: str) -> None:
    """Skip (a developer's machine without ../shared) or fail (CI) for a missing fixture."""
    import pytest

    message = (f"{what} not found (set EMO_SHARED_DIR to the shared/ folder, or the family's fixture "
               "variable)")
    if fixtures_required():
        pytest.fail(message + f"; {FIXTURES_REQUIRED_ENV} is set, so this fails instead of skipping")
    pytest.skip(message)


def require_onnxruntime() -> None:
    """At a test module's top: skip the module without onnxruntime (a developer's machine), fail
    in CI, where requirements-test.txt installs it and the vocal parity proofs must run."""
    import importlib

    import pytest

    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        message = "onnxruntime is not installed (pip install -r requirements-test.txt)"
        if fixtures_required():
            pytest.fail(message + f"; {FIXTURES_REQUIRED_ENV} is set, so this fails instead of skipping",
                        pytrace=False)
        pytest.skip(message, allow_module_level=True)


def discover(folder: Path, pattern: str) -> list[Path]:
    """Every fixture matching `pattern` in `folder` (sorted); tests never hard-code fixture names."""
    return sorted(Path(folder).glob(pattern)) if Path(folder).is_dir() else []



def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Give the zero-initialised layers (face locator out, temporal out, speed attention out)
    random values too, so that every conditioning path has an effect on a tiny random model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith(("audio_encoder", "vae")) and torch.count_nonzero(param) == 0:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model



def sine(seconds: float, sample_rate: int = 16000, freq: float = 220.0, channels: int = 1,
         seed: int = 0) -> torch.Tensor:
    """A voice-like test signal: a tone with a syllable-rate envelope plus a little noise, [C, T]."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    rng = np.random.default_rng(seed)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    x = 0.3 * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    return torch.tensor(np.stack([x] * channels), dtype=torch.float32)


def write_wav(path: Path, waveform: torch.Tensor, sample_rate: int) -> Path:
    import av

    channels = waveform.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = layout
        data = (waveform.clamp(-1, 1).numpy() * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data.T.reshape(1, -1).copy() if channels > 1 else data,
                                           format="s16", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def box_mask(size: int, lo: float = 0.25, hi: float = 0.75) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[int(size * lo):int(size * hi), int(size * lo):int(size * hi)] = 1
    return mask


def portrait(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random colour field, [size, size, 3] in 0..1."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")[0].permute(1, 2, 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(arguments: list, tmp_path: Path, processes: int = 2, timeout: float = 240,
                      status: int = 0) -> str:
    """`accelerate launch --multi_gpu` with `processes` CPU processes (DDP over gloo) running
    `arguments` (a script and its arguments, or `-m module ...`); returns what they printed, and
    fails the test when the run does not exit with `status` or is not done in `timeout` seconds."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    # Without GPUs, --multi_gpu starts torch.distributed processes and the code asks accelerate
    # for the CPU, which then uses gloo; `--cpu` would ask for MPI instead.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *map(str, arguments)]
    # Own process group, so a hung run is ended with all the processes the launcher started.
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"the {processes}-process run did not finish in {timeout} s:\n" + output[-3000:]) from None
    assert process.returncode == status, output[-6000:]
    return output
