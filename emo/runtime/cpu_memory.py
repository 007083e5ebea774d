"""Keep freed CPU memory in the process, so that the next tensor of the same size reuses it.

glibc's malloc serves every allocation above 32 MB with a fresh `mmap` and unmaps it on free. A
full-size denoising step allocates and frees such tensors (activations of 16-32 frames at 64x64)
thousands of times, and each fresh mapping is faulted in page by page and zeroed by the kernel:
measured on the vs-Hallo benchmark (bench/RESULTS.md), a fifth of a CPU run's time was system time
spent on those page faults. With mmap off for malloc (`M_MMAP_MAX` 0) and a high trim threshold,
large tensors come from the heap and their pages are reused; the run's peak memory stays the same
(the heap holds what the mappings held), but the process keeps it until it exits.

So the command line (`emo generate`, `emo batch`: one process per job) turns it on; a library
caller decides for itself (`keep_freed_memory()`), and `EMO_KEEP_FREED_MEMORY=0` turns it off.
Only glibc has these knobs: elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc <malloc.h> mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it accepts (2 GiB) - free memory at the top
# of the heap beyond this is still returned to the system.
TRIM_THRESHOLD = 2**31 - 1
ENV = "EMO_KEEP_FREED_MEMORY"


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def keep_freed_memory() -> str:
    """Serve large CPU allocations from the heap and keep freed pages (see the module docstring).
    Returns what was done, for the run's plan line: "kept", "off (EMO_KEEP_FREED_MEMORY=0)" or
    "not available" (not glibc)."""
    if os.environ.get(ENV, "").strip() == "0":
        return f"off ({ENV}=0)"
    mallopt = _mallopt()
    if mallopt is None:
        return "not available"
    # mallopt returns 1 on success; musl and others without the knobs return 0
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "not available"
    return "kept"
