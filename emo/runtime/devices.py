"""Device and precision choice for a run (ComfyUI's nodes ask ComfyUI first, then this)."""

from __future__ import annotations

import torch

from .cpu_memory import keep_freed_memory

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


# ---- CPU threads ---------------------------------------------------------------------------------
THREADS_ENV = ("EMO_NUM_THREADS", "OMP_NUM_THREADS")  # in this order: the first set one wins
MAX_DEFAULT_THREADS = 16  # beyond this the many small ops of a clip gain little (unmeasured above 2 cores)

THREADS_HELP = ("CPU threads for PyTorch (default: the CPUs this process may use - its affinity mask and "
                "container CPU quota - at most {cap}; or EMO_NUM_THREADS / OMP_NUM_THREADS when set). Idle "
                "threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE unless you set it), so a busy "
                "machine slows a run down about 1.4x, not 3-9x (bench/RESULTS.md)")


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may run on: its affinity mask, lowered to a container's CPU quota
    (cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`, rounded up) when one is set."""
    import math
    import os

    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time a cgroup quota allows (2.5 = 250 ms per 100 ms), or None (no quota,
    or no cgroup files to read)."""
    from pathlib import Path

    root = Path(root)
    own = _own_cgroup_paths()
    # cgroup v2: "max 100000" or "250000 100000", in the process's cgroup or the mount's root.
    for folder in (root / own.get("", "").lstrip("/"), root):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    # cgroup v1: cfs_quota_us = -1 means no quota.
    for folder in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        for inner in (folder / own.get("cpu", "").lstrip("/"), folder):
            try:
                quota = int((inner / "cpu.cfs_quota_us").read_text())
                period = int((inner / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return None if quota <= 0 or period <= 0 else quota / period
    return None


def _own_cgroup_paths() -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; "" is cgroup v2's unified hierarchy."""
    paths = {}
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def default_threads() -> tuple[int, str]:
    """(threads, where the number comes from): EMO_NUM_THREADS or OMP_NUM_THREADS when set,
    else the usable CPUs (at most MAX_DEFAULT_THREADS)."""
    import os

    for name in THREADS_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a whole number; set it to a thread count such as 2, "
                                 "or unset it") from None
            if threads < 1:
                raise ValueError(f"{name}={value!r}: the thread count must be at least 1")
            return threads, name
    cpus = usable_cpus()
    if cpus > MAX_DEFAULT_THREADS:
        return MAX_DEFAULT_THREADS, f"{cpus} usable CPUs, capped at {MAX_DEFAULT_THREADS}"
    return cpus, f"{cpus} usable CPU{'s' if cpus > 1 else ''}"


def set_cpu_threads(requested: int | None = None, deterministic: bool = False) -> tuple[int, str]:
    """Set PyTorch's CPU thread count: `requested` (--threads), else 1 when `deterministic` (the
    CPU results depend on the thread count: 1 and 2 threads differ by up to 42/255 per pixel on
    the demo, through the clip chaining), else `default_threads()`. Returns (threads, why)."""
    if requested is not None:
        threads, why = requested, "--threads"
    elif deterministic:
        threads, why = 1, "--deterministic"
    else:
        threads, why = default_threads()
    torch.set_num_threads(threads)
    return threads, why


def use_deterministic_algorithms() -> None:
    """Deterministic kernels where PyTorch has a choice (GPU reductions, cuDNN, cuBLAS)."""
    import os

    # cuBLAS needs a fixed workspace to be deterministic; read when CUDA starts, so set it now.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    # warn_only: an op without a deterministic version warns instead of stopping the run.
    torch.use_deterministic_algorithms(True, warn_only=True)


def setup_run(threads: int | None = None, deterministic: bool = False) -> str:
    """A command-line run's CPU threads, determinism (--threads, --deterministic) and memory
    reuse (`cpu_memory.keep_freed_memory`: a command is one process per run); returns the plan
    line's words for the threads, e.g. "2 CPU threads (2 usable CPUs)"."""
    keep_freed_memory()
    count, why = set_cpu_threads(threads, deterministic)
    if deterministic:
        use_deterministic_algorithms()
    return f"{count} CPU thread{'s' if count > 1 else ''} ({why})"
