"""Tiny synthetic files in every on-disk format round-trip bit-exactly through load_components."""

from __future__ import annotations

import logging

import pytest
import torch

from emo.model import EMOModel
from emo.models.temporal import sinusoidal_table
from emo.weights import load_components
from tests.emo.weights import formats


@pytest.fixture(scope="module")
def files(tmp_path_factory, source):
    """Every component of `source` written in each format users have."""
    d = tmp_path_factory.mktemp("components")
    state = source.state_dict()
    unet, vae = formats.part(state, "reference_net."), formats.part(state, "vae.")
    sd = formats.sd_checkpoint(source)
    paths = {
        "sd.safetensors": formats.save_safetensors(sd, d / "sd.safetensors"),
        "sd.ckpt": formats.save_pickle(sd, d / "sd.ckpt", nested=True),
        "sd_fp16.safetensors": formats.save_safetensors({k: v.half() for k, v in sd.items()},
                                                        d / "sd_fp16.safetensors"),
        "sd_no_vae.safetensors": formats.save_safetensors(formats.sd_checkpoint(source, with_vae=False),
                                                          d / "sd_no_vae.safetensors"),
        "unet_ldm.safetensors": formats.save_safetensors(formats.unet_to_ldm(unet, source.config, prefix=""),
                                                         d / "unet_ldm.safetensors"),
        "unet_diffusers.safetensors": formats.save_safetensors(unet, d / "unet_diffusers.safetensors"),
        "diffusers": formats.write_diffusers_sd_folder(source, d / "stable-diffusion-v1-5"),
        "vae_ldm.safetensors": formats.save_safetensors(formats.vae_to_ldm(vae, source.config),
                                                        d / "vae_ldm.safetensors"),
        "vae_ldm.ckpt": formats.save_pickle(
            {**formats.vae_to_ldm(vae, source.config), "loss.logvar": torch.zeros(())}, d / "vae_ldm.ckpt",
            nested=True),
        "vae_old_names.safetensors": formats.save_safetensors(formats.vae_to_legacy_diffusers(vae),
                                                              d / "vae_old_names.safetensors"),
        "vae_diffusers.bin": formats.save_pickle(vae, d / "vae_diffusers.bin"),
    }
    ctc = formats.wav2vec2_ctc(source)
    ctc.save_pretrained(d / "wav2vec2-base-960h")
    paths["w2v_folder"] = d / "wav2vec2-base-960h"
    ctc_state = ctc.state_dict()
    paths["w2v_bin_folder"] = d / "w2v_bin"
    paths["w2v_bin_folder"].mkdir()
    (paths["w2v_bin_folder"] / "config.json").write_text((paths["w2v_folder"] / "config.json").read_text())
    formats.save_pickle(formats.old_weight_norm_names(ctc_state), paths["w2v_bin_folder"] / "pytorch_model.bin")
    paths["w2v_comfy.safetensors"] = formats.save_safetensors(ctc_state, d / "w2v_comfy.safetensors")
    paths["w2v_bare.safetensors"] = formats.save_safetensors(
        formats.old_weight_norm_names(formats.part(state, "audio_encoder.")), d / "w2v_bare.safetensors")
    paths["mm_v2.safetensors"] = formats.save_safetensors(formats.motion_state(source), d / "mm_v2.safetensors")
    paths["mm_v1.ckpt"] = formats.save_pickle(formats.motion_state(source, pe_length=24, mid_block=False),
                                              d / "mm_v1.ckpt", nested=True)
    paths["mm_64.safetensors"] = formats.save_safetensors(formats.motion_state(source, pe_length=64),
                                                          d / "mm_64.safetensors")
    return paths


def meta_target(source) -> EMOModel:
    with torch.device("meta"):
        return EMOModel(source.config).eval()


def _equal(model, source, prefix: str, source_prefix: str | None = None, skip=lambda k: False):
    """Every tensor of model[prefix] equals source[source_prefix] (bit-exact); returns the count."""
    mine = {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix) and not skip(k)}
    theirs = {k[len(source_prefix or prefix):]: v for k, v in source.state_dict().items()
              if k.startswith(source_prefix or prefix)}
    assert mine, prefix
    for key, value in mine.items():
        assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), prefix + key
    return len(mine)


def _spatial(key: str) -> bool:
    return ".motion_modules." in key


@pytest.mark.parametrize("name", ["sd.safetensors", "sd.ckpt", "diffusers"])
def test_sd15_fills_reference_net_backbone_and_vae(source, files, name):
    model = meta_target(source)
    report = load_components(model, sd15=files[name])
    assert set(report.sources) == {"unet", "vae"}
    assert _equal(model, source, "reference_net.") == 208
    # The backbone's spatial layers get the same SD weights (in their own storage).
    assert _equal(model, source, "backbone.", "reference_net.", skip=_spatial) == 208
    assert (model.backbone.conv_in.weight.data_ptr() != model.reference_net.conv_in.weight.data_ptr())
    assert _equal(model, source, "vae.") == 176
    state = model.state_dict()
    untouched = [k for k in state if k not in report.written]
    assert all(state[k].is_meta for k in untouched)
    assert {k.split(".")[0] for k in untouched} == {"backbone", "face_locator", "audio_projection",
                                                     "speed_encoder", "audio_encoder"}
    assert all(".motion_modules." in k for k in untouched if k.startswith("backbone."))


def test_fp16_file_into_fp32_model(source, files):
    model = meta_target(source)
    load_components(model, sd15=files["sd_fp16.safetensors"])
    expected = source.reference_net.conv_in.weight.half().float()
    assert model.reference_net.conv_in.weight.dtype == torch.float32
    assert torch.equal(model.reference_net.conv_in.weight, expected)


@pytest.mark.parametrize("name", ["unet_ldm.safetensors", "unet_diffusers.safetensors", "diffusers/unet"])
def test_unet_only_sources_with_separate_vae(source, files, name):
    path = files["diffusers"] / "unet" if name == "diffusers/unet" else files[name]
    model = meta_target(source)
    report = load_components(model, sd15=path, vae=files["diffusers"] / "vae")
    assert _equal(model, source, "reference_net.") == 208
    assert _equal(model, source, "vae.") == 176
    assert report.sources["vae"] == files["diffusers"] / "vae"


@pytest.mark.parametrize("name", ["vae_ldm.safetensors", "vae_ldm.ckpt", "vae_old_names.safetensors",
                                  "vae_diffusers.bin", "sd.safetensors", "diffusers"])
def test_vae_layouts_round_trip(source, files, name):
    model = meta_target(source)
    load_components(model, vae=files[name])
    assert _equal(model, source, "vae.") == 176
    assert model.reference_net.conv_in.weight.is_meta


@pytest.mark.parametrize("name", ["w2v_folder", "w2v_bin_folder", "w2v_comfy.safetensors", "w2v_bare.safetensors"])
def test_wav2vec2_round_trip(source, files, name):
    model = meta_target(source)
    report = load_components(model, wav2vec2=files[name])
    assert _equal(model, source, "audio_encoder.") == 50
    if name != "w2v_bare.safetensors":
        assert any("lm_head.*" in note for note in report.notes)
    if name != "w2v_bin_folder":
        return
    # old weight-norm names (weight_g/weight_v): the loaded encoder computes what the source computes
    audio = torch.randn(1, 3200, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.audio_encoder(audio).last_hidden_state,
                           source.audio_encoder(audio).last_hidden_state)


def test_animatediff_v2_round_trip(source, files):
    model = meta_target(source)
    report = load_components(model, motion_module=files["mm_v2.safetensors"])
    count = _equal(model, source, "backbone.", skip=lambda k: ".motion_modules." not in k or ".speed_" in k)
    assert count == 196  # 7 temporal modules x 28 tensors (speed layers excluded)
    assert not report.notes and not report.warnings
    assert all(v.is_meta for k, v in model.state_dict().items() if ".speed_" in k)


def test_animatediff_v1_keeps_mid_block_and_regenerates_tables(source, files, caplog):
    model = EMOModel.from_preset("tiny", seed=7)
    mid_before = {k: v.clone() for k, v in model.backbone.mid_block.motion_modules.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="emo.weights"):
        report = load_components(model, motion_module=files["mm_v1.ckpt"])
    assert any("mid_block.motion_modules.0" in n for n in report.notes)
    assert "mid_block.motion_modules.0" in caplog.text and "24 frames" in caplog.text
    after = model.backbone.mid_block.motion_modules.state_dict()
    assert all(torch.equal(after[k], v) for k, v in mid_before.items())
    module = model.backbone.down_blocks[0].motion_modules[0].temporal_transformer
    ours = module.transformer_blocks[0].attention_blocks[1].pos_encoder.pe
    assert ours.shape[1] == 32 and torch.equal(ours, sinusoidal_table(32, ours.shape[-1]))
    assert torch.equal(module.proj_in.weight,
                       source.backbone.down_blocks[0].motion_modules[0].temporal_transformer.proj_in.weight)


def test_animatediff_longer_table_loads(source, files):
    model = meta_target(source)
    report = load_components(model, motion_module=files["mm_64.safetensors"])
    assert any("64 frames" in n for n in report.notes) and not report.warnings
    pe = model.backbone.up_blocks[1].motion_modules[1].temporal_transformer.transformer_blocks[0] \
        .attention_blocks[0].pos_encoder.pe
    assert torch.equal(pe, sinusoidal_table(32, pe.shape[-1]))


def test_animatediff_table_that_is_not_the_formula_is_kept_with_a_warning(source, tmp_path):
    state = formats.motion_state(source)
    key = next(k for k in state if k.endswith(".pe"))
    state[key] = state[key] + 0.5
    path = formats.save_safetensors(state, tmp_path / "mm_learned_pe.safetensors")
    model = meta_target(source)
    report = load_components(model, motion_module=path)
    assert report.warnings and "differ from the sinusoid formula" in report.warnings[0]
    assert torch.equal(model.backbone.get_buffer(key), state[key])


def test_real_model_is_updated_in_place_in_its_own_dtype(source, files):
    model = EMOModel.from_preset("tiny", seed=3).to(torch.bfloat16)
    weight = model.reference_net.conv_in.weight
    load_components(model, sd15=files["sd.safetensors"], wav2vec2=files["w2v_comfy.safetensors"])
    assert model.reference_net.conv_in.weight is weight  # same Parameter object
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, source.reference_net.conv_in.weight.to(torch.bfloat16))
    assert torch.equal(model.audio_encoder.feature_projection.projection.weight,
                       source.audio_encoder.feature_projection.projection.weight.to(torch.bfloat16))


def test_sharded_folder_and_fp16_variant_names(source, files, tmp_path):
    import json
    import shutil

    from safetensors.torch import save_file

    # a transformers folder whose weights are split in two shards with an index
    folder = tmp_path / "w2v_sharded"
    folder.mkdir()
    shutil.copy(files["w2v_folder"] / "config.json", folder / "config.json")
    state = formats.wav2vec2_ctc(source).state_dict()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    # a diffusers VAE folder holding only the fp16 variant
    vae = tmp_path / "vae"
    shutil.copytree(files["diffusers"] / "vae", vae)
    (vae / "diffusion_pytorch_model.safetensors").rename(vae / "diffusion_pytorch_model.fp16.safetensors")
    model = meta_target(source)
    load_components(model, wav2vec2=folder, vae=vae)
    assert _equal(model, source, "audio_encoder.") == 50
    assert _equal(model, source, "vae.") == 176


def test_format_is_read_from_the_bytes_not_the_name(source, files, tmp_path):
    import shutil

    renamed = tmp_path / "mm_sd_v15_v2.safetensors"  # really a torch pickle
    shutil.copy(files["mm_v1.ckpt"], renamed)
    model = meta_target(source)
    load_components(model, motion_module=renamed)
    assert torch.equal(model.backbone.down_blocks[1].motion_modules[0].temporal_transformer.proj_in.weight,
                       source.backbone.down_blocks[1].motion_modules[0].temporal_transformer.proj_in.weight)
