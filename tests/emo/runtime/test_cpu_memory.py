"""emo.runtime.cpu_memory: large CPU tensors reuse freed memory instead of faulting in fresh pages.

Measured in fresh processes: the setting is process-wide and other tests (the command line's)
turn it on in this one."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from emo.runtime import cpu_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
ROOT = Path(cpu_memory.__file__).resolve().parents[2]

# Minor page faults of four passes over a chain of 20-40 MB tensors made and freed, as a UNet
# call does, after `keep_freed_memory()` or without it.
PROBE = """
import json, resource, sys
import torch
import torch.nn.functional as F
from emo.runtime import cpu_memory
done = cpu_memory.keep_freed_memory() if sys.argv[1] == "keep" else "default"
def one_pass():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.randn(64, 256, 320)
    for i in range(12):
        y = F.gelu(x.repeat(1, 1, 2 if i % 3 == 0 else 1))
        x = y[..., :320].contiguous() + 1
    del x, y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"done": done, "faults": [one_pass() for _ in range(4)]}))
"""


def _faults(mode: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_memory.ENV, "0")
    assert cpu_memory.keep_freed_memory() == f"off ({cpu_memory.ENV}=0)"


@pytest.mark.skipif(not GLIBC, reason="mallopt's knobs are glibc's")
def test_kept_memory_is_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert kept["done"] == "kept"
    # default glibc faults in every pass's large tensors again (measured 50-90k pages a pass);
    # kept: the heap grows in the first pass, later passes reuse its pages
    assert sum(default["faults"][1:]) > 30_000, default
    assert sum(kept["faults"][1:]) < sum(default["faults"][1:]) // 4, (default, kept)


def test_environment_switch_reaches_a_fresh_process():
    assert _faults("keep", **{cpu_memory.ENV: "0"})["done"] == f"off ({cpu_memory.ENV}=0)"
