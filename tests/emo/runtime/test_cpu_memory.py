"""emo.runtime.cpu_memory: large CPU tensors reuse freed memory instead of faulting in fresh pages."""

from __future__ import annotations

import platform
import resource
import sys

import pytest
import torch
import torch.nn.functional as F

from emo.runtime import cpu_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _page_faults_of_a_forward_pass() -> int:
    """Minor page faults of a chain of 20-40 MB tensors made and freed, as a UNet call does."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.randn(64, 256, 320)
    for i in range(12):
        y = F.gelu(x.repeat(1, 1, 2 if i % 3 == 0 else 1))
        x = y[..., :320].contiguous() + 1
    del x, y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_memory.ENV, "0")
    assert cpu_memory.keep_freed_memory() == f"off ({cpu_memory.ENV}=0)"


@pytest.mark.skipif(not GLIBC, reason="mallopt's knobs are glibc's")
def test_kept_memory_is_reused_without_page_faults(monkeypatch):
    monkeypatch.delenv(cpu_memory.ENV, raising=False)
    assert cpu_memory.keep_freed_memory() == "kept"
    first = _page_faults_of_a_forward_pass()  # the heap grows to the pass's peak once
    later = [_page_faults_of_a_forward_pass() for _ in range(3)]
    # default glibc faults in 50-90k pages on every such pass (measured); kept: next to none after the first
    assert first > 10_000
    assert sum(later) < first // 4, (first, later)
