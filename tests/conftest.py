"""Shared fixtures: tiny random EMO models and checkpoints, made here."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import randomize_

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model():
    from emo.model import EMOModel

    return randomize_(EMOModel.from_preset("tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from emo.checkpoints import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
