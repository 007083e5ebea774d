"""Device and precision choice for a run (ComfyUI's nodes ask ComfyUI first, then this)."""

from __future__ import annotations

import torch

DEVICE_HELP = "auto, cpu, cuda, cuda:1, mps"

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32' / 'fp16' / 'bf16' (or a torch dtype, or None) -> torch dtype."""
    if precision is None or isinstance(precision, torch.dtype):
        return precision
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}") from None


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA, else MPS, else the CPU) or a torch device name that this machine has.

    Raises ValueError naming what this install can use, instead of torch's assertion deep in
    the first tensor move (`cuda` on a CPU-only torch, a GPU index that does not exist, ...).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device name; use one of {DEVICE_HELP}") from None
    available = available_devices()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch has no CUDA GPU ({_torch_build()}); "
                             f"use one of {', '.join(available)}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"--device mps: Apple's Metal backend is not available here; use one of {', '.join(available)}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: unsupported device type {device.type!r}; use one of {DEVICE_HELP}")
    return device


def available_devices() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto', 'fp32', 'fp16' or 'bf16' -> a torch dtype for `device`.

    auto: fp32 on the CPU; on a CUDA GPU bf16 where supported, else fp16; fp16 on MPS.
    """
    if precision != "auto":
        return parse_dtype(precision)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _torch_build() -> str:
    cuda = torch.version.cuda
    return f"torch {torch.__version__}, " + (f"built for CUDA {cuda} but no GPU is visible" if cuda else
                                               "a CPU-only build")
