"""Checkpoint files: round trip, strict loading, clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from emo.checkpoints import CheckpointError, describe, load_checkpoint, parse_dtype, read_config, save_checkpoint
from emo.model import EMOModel


def test_round_trip_is_exact(tiny_model, tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    original = tiny_model.state_dict()
    restored = loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert loaded.config == tiny_model.config
    assert not loaded.training


def test_metadata_holds_config_and_description(tmp_path):
    model = EMOModel.from_preset("tiny", seed=1)
    path = save_checkpoint(model, tmp_path / "m.safetensors", description="hello")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "emo-checkpoint"
    assert read_config(path) == model.config
    assert describe(path)["description"] == "hello"


def test_half_precision_save_and_load(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "half.safetensors", dtype="fp16")
    assert load_file(str(path))["backbone.conv_in.weight"].dtype == torch.float16
    model = load_checkpoint(path, dtype="bf16")
    assert model.backbone.conv_in.weight.dtype == torch.bfloat16


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="EMO checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


def test_not_an_emo_checkpoint(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an EMO checkpoint"):
        load_checkpoint(path)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path, tiny_checkpoint):
    state = load_file(str(tiny_checkpoint))
    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
    del state["backbone.conv_in.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    state["face_locator.conv_in.bias"] = torch.zeros(3)
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    for part in ("missing keys: backbone.conv_in.weight", "unexpected keys: backbone.extra.weight",
                 "face_locator.conv_in.bias", "Expected config", '"name": "emo-tiny"'):
        assert part in message


def test_unknown_precision():
    assert parse_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        parse_dtype("fp8")


def test_save_is_atomic_on_failure(tmp_path, tiny_model, monkeypatch):
    import emo.checkpoints as checkpoints

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tiny_model, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []
