"""Missing, truncated, unsafe, wrong-architecture and wrong-size files: one clear error each,
naming the file, what was expected and what was found."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emo.config import EMOConfig
from emo.model import EMOModel
from emo.weights import WeightFileError, load_components, open_weights
from tests.emo.weights import formats


def meta_target(config=None) -> EMOModel:
    with torch.device("meta"):
        return EMOModel(config or EMOConfig.preset("tiny"))


@pytest.fixture(scope="module")
def sd_file(tmp_path_factory, source):
    folder = tmp_path_factory.mktemp("sd")
    return formats.save_safetensors(formats.sd_checkpoint(source), folder / "sd.safetensors")


def test_missing_file_names_component_and_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SD1\.5 checkpoint: .*nope\.safetensors does not exist"):
        load_components(meta_target(), sd15=tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match=r"wav2vec2: .*w2v does not exist"):
        load_components(meta_target(), wav2vec2=tmp_path / "w2v")


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_file(tmp_path, source, suffix):
    state = formats.sd_checkpoint(source)
    whole = tmp_path / f"whole{suffix}"
    (formats.save_safetensors if suffix == ".safetensors" else formats.save_pickle)(state, whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(WeightFileError, match=rf"SD1\.5 checkpoint: .*cut\{suffix}.*truncated"):
        load_components(meta_target(), sd15=cut)


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
    (b"GGUF\x03\x00\x00\x00", "GGUF"),
    (b"\x00\x01 random bytes that are no weights", "neither a .safetensors file nor a PyTorch checkpoint"),
])
def test_files_that_are_not_weights(tmp_path, content, words):
    path = tmp_path / "mm_sd_v15_v2.ckpt"
    path.write_bytes(content)
    with pytest.raises(WeightFileError, match=words) as error:
        load_components(meta_target(), motion_module=path)
    assert str(error.value).startswith(f"AnimateDiff motion module: {path}")


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: run code while loading
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickles_are_loaded_weights_only(tmp_path):
    payload = _Payload()
    payload.marker = str(tmp_path / "code-ran")
    torch.save({"down_blocks.0.motion_modules.0.x": torch.zeros(1), "evil": payload}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightFileError, match="weights_only=True") as error:
        open_weights(tmp_path / "evil.ckpt", "AnimateDiff motion module")
    assert "evil.ckpt" in str(error.value)
    assert not (tmp_path / "code-ran").exists()
    # numpy scalars (some old training checkpoints) are refused the same way, with the fix named
    torch.save({"state_dict": {"a": torch.zeros(1)}, "global_step": np.float64(3)}, tmp_path / "np.ckpt")
    with pytest.raises(WeightFileError, match=r"it refers to numpy\..*Convert it to \.safetensors"):
        open_weights(tmp_path / "np.ckpt", "SD1.5 checkpoint")


def test_wrong_component_says_what_the_file_is(source, sd_file, tmp_path):
    vae = formats.save_safetensors(formats.vae_to_ldm(formats.part(source.state_dict(), "vae."), source.config),
                                   tmp_path / "vae.safetensors")
    with pytest.raises(WeightFileError, match=r"no SD1\.5 UNet weights in .*vae\.safetensors; it looks like "
                                              r"a VAE \(original LDM layout\)"):
        load_components(meta_target(), sd15=vae)
    with pytest.raises(WeightFileError, match=r"no motion-module weights in .*sd\.safetensors; it looks like "
                                              r"a Stable Diffusion 1\.x checkpoint"):
        load_components(meta_target(), motion_module=sd_file)
    with pytest.raises(WeightFileError, match=r"wav2vec2: .*sd\.safetensors does not fit; expected a wav2vec2 "
                                              r"encoder with hidden size 32"):
        load_components(meta_target(), wav2vec2=sd_file)


def test_sdxl_checkpoint_is_named(source, tmp_path):
    state = formats.sd_checkpoint(source)
    # the key diffusers' detector (and ComfyUI) use to recognise SDXL: its second text encoder
    state["conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"] = torch.zeros(4)
    path = formats.save_safetensors(state, tmp_path / "sd_xl_base_1.0.safetensors")
    with pytest.raises(WeightFileError, match=r"sd_xl_base_1\.0\.safetensors looks like an SDXL base "
                                              r"checkpoint.*; "
                                              r"EMO needs a Stable Diffusion 1\.5-layout UNet"):
        load_components(meta_target(), sd15=path)


def test_wrong_size_unet_lists_shape_mismatches(sd_file):
    config = EMOConfig.preset("tiny")
    config.unet.cross_attention_dim = 48
    with pytest.raises(WeightFileError) as error:
        load_components(meta_target(config), sd15=sd_file)
    message = str(error.value)
    assert "SD1.5 UNet: " in message and "sd.safetensors does not fit" in message
    assert "cross-attention width 48" in message  # what was expected
    assert "shape mismatches" in message and "attn2.to_k.weight file [32, 32] != model [32, 48]" in message


def test_incomplete_file_lists_missing_and_unexpected_keys(source, tmp_path):
    state = formats.sd_checkpoint(source)
    del state["model.diffusion_model.out.2.weight"]
    state["model.diffusion_model.extra_block.weight"] = torch.zeros(2)
    path = formats.save_safetensors(state, tmp_path / "odd.safetensors")
    with pytest.raises(WeightFileError, match=r"1 missing keys: conv_out\.weight; "
                                              r"1 unexpected keys: model\.diffusion_model\.extra_block\.weight"):
        load_components(meta_target(), sd15=path)


def test_wrong_size_wav2vec2_folder_names_the_config_fields(source, tmp_path):
    config = {**source.config.audio.wav2vec2, "hidden_size": 48, "model_type": "wav2vec2"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightFileError, match=r"config\.json describes another architecture "
                                              r"\(hidden_size: file 48, EMO needs 32\)"):
        load_components(meta_target(), wav2vec2=tmp_path)


def test_wrong_size_wav2vec2_file(source, tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = {**source.config.audio.wav2vec2, "hidden_size": 48, "num_attention_heads": 2}
    other = Wav2Vec2Model(Wav2Vec2Config(**config))
    path = formats.save_safetensors(other.state_dict(), tmp_path / "wav2vec2_other.safetensors")
    with pytest.raises(WeightFileError) as error:
        load_components(meta_target(), wav2vec2=path)
    message = str(error.value)
    assert "hidden size 48" in message and "expected a wav2vec2 encoder with hidden size 32" in message
    assert "shape mismatches" in message


def test_folder_without_weights_lists_what_is_there(tmp_path, source):
    folder = tmp_path / "wav2vec2-base-960h"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**source.config.audio.wav2vec2, "model_type": "wav2vec2"}))
    (folder / "README.md").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"no weights in folder .*looked for model\.safetensors, "
                                                r"pytorch_model\.safetensors.*found: README\.md, config\.json"):
        load_components(meta_target(), wav2vec2=folder)


def test_incomplete_motion_module_is_refused(source, tmp_path):
    state = formats.motion_state(source)
    dropped = next(k for k in state if k.startswith("down_blocks.1.") and k.endswith("proj_in.weight"))
    del state[dropped]
    path = formats.save_safetensors(state, tmp_path / "mm_broken.safetensors")
    with pytest.raises(WeightFileError, match=rf"1 missing keys: {dropped}"):
        load_components(meta_target(), motion_module=path)
    # a down/up module absent entirely is an error too (only the mid-block one may be absent)
    state = {k: v for k, v in formats.motion_state(source).items() if not k.startswith("up_blocks.0.")}
    path = formats.save_safetensors(state, tmp_path / "mm_no_up0.safetensors")
    with pytest.raises(WeightFileError, match=r"missing keys: up_blocks\.0\.motion_modules\.0"):
        load_components(meta_target(), motion_module=path)


def test_sd_file_without_vae_needs_a_vae_for_an_empty_model(source, tmp_path):
    path = formats.save_safetensors(formats.sd_checkpoint(source, with_vae=False), tmp_path / "unet.safetensors")
    with pytest.raises(ValueError, match=r"unet\.safetensors holds no VAE .* pass one"):
        load_components(meta_target(), sd15=path)
    model = EMOModel.from_preset("tiny", seed=1)  # a model that has a VAE keeps it
    before = model.vae.decoder.conv_out.weight.clone()
    load_components(model, sd15=path)
    assert torch.equal(model.vae.decoder.conv_out.weight, before)


def test_sdxl_vae_folder_is_refused_by_its_scaling_factor(source, tmp_path):
    folder = tmp_path / "sdxl-vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **source.config.vae,
                                                    "scaling_factor": 0.13025}))
    with pytest.raises(WeightFileError, match=r"scaling_factor: file 0\.13025, EMO needs 0\.18215"):
        load_components(meta_target(), vae=folder)
