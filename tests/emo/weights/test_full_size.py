"""Full-size layouts on the meta device: every key of the real files maps, none is left over,
every shape agrees. The sources are the shared key/shape manifests of the real files
(sd15_unet_keys.json, animatediff_mm_sd_v15_v2_keys.json) and the real architectures built on
meta (wav2vec2-base-960h's Wav2Vec2ForCTC, diffusers' MotionAdapter); no weights are needed."""

from __future__ import annotations

import json

import pytest
import torch

from emo.model import EMOModel
from emo.weights import WeightFile, WeightFileError, plan_components
from emo.weights.sd15 import diffusers_unet_config
from tests.emo.weights import formats
from tests.helpers import SHARED, missing_fixture

WEIGHT_KEYS = SHARED / "fixtures" / "weight_keys"


def _manifest(name: str) -> dict[str, torch.Tensor]:
    path = WEIGHT_KEYS / name
    if not path.is_file():
        missing_fixture(f"shared fixture {path}")
    return {k: torch.empty(v, device="meta") for k, v in json.loads(path.read_text()).items()}


def _meta(state: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v.shape, device="meta") for k, v in state.items()}


@pytest.fixture(scope="module")
def sd15():
    return EMOModel.from_preset("sd15", device="meta")


@pytest.fixture(scope="module")
def shapes(sd15):
    return {k: tuple(v.shape) for k, v in sd15.state_dict().items()}


def _part(shapes: dict, prefix: str) -> dict:
    return {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix)}


def _plans(model, **components) -> dict:
    return {name: plan for name, plan, _ in plan_components(model, **components)}


def _assert_exact(plan, expected: dict, allow_missing=()):
    assert plan.keys() == expected.keys() - set(allow_missing)
    assert not plan.unused
    planned = {**plan.shapes, **{k: tuple(t.shape) for k, t in plan.computed.items()}}
    assert all(planned[k] == expected[k] for k in plan.keys())


@pytest.fixture(scope="module")
def ldm_sd15(sd15):
    """A full SD1.5 single-file checkpoint as key -> meta tensor (UNet and VAE in LDM names)."""
    unet = formats.unet_to_ldm(_manifest("sd15_unet_keys.json"), sd15.config)
    vae = formats.vae_to_ldm(_meta(sd15.vae.state_dict()), sd15.config, prefix="first_stage_model.")
    extras = {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
              "alphas_cumprod": (1000,), "model_ema.decay": ()}
    return {**unet, **vae, **{k: torch.empty(s, device="meta") for k, s in extras.items()}}


def test_test_writer_produces_known_ldm_names(ldm_sd15):
    # Anchors of the original SD1.5 layout (CompVis' openaimodel; diffusers' detector uses the first).
    for key, shape in {
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.time_embed.2.weight": (1280, 1280),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    }.items():
        assert tuple(ldm_sd15[key].shape) == shape, key
    assert sum(k.startswith("model.diffusion_model.") for k in ldm_sd15) == 686
    assert sum(k.startswith("first_stage_model.") for k in ldm_sd15) == 248


def test_sd15_single_file_fills_both_unets_and_the_vae(sd15, shapes, ldm_sd15):
    plans = _plans(sd15, sd15=WeightFile.from_tensors(ldm_sd15, "v1-5-pruned-emaonly.safetensors"))
    assert set(plans) == {"unet", "vae"}
    _assert_exact(plans["unet"], _part(shapes, "reference_net."))
    backbone_spatial = {k: s for k, s in _part(shapes, "backbone.").items() if ".motion_modules." not in k}
    assert backbone_spatial == _part(shapes, "reference_net.")  # so the same plan fills the backbone
    _assert_exact(plans["vae"], _part(shapes, "vae."))
    assert len(plans["unet"].keys()) == 686 and len(plans["vae"].keys()) == 248
    assert "Stable Diffusion 1.x" in plans["unet"].found


def test_sd15_ema_copy_is_used_when_asked(sd15, shapes, ldm_sd15):
    # LDM's EMA keeps flat names: model.diffusion_model.input_blocks.0.0.weight ->
    # model_ema.diffusion_modelinput_blocks00weight
    ema = {"model_ema." + k[len("model."):].replace(".", ""): torch.empty(t.shape, device="meta")
           for k, t in ldm_sd15.items() if k.startswith("model.diffusion_model.")}
    source = WeightFile.from_tensors({**ldm_sd15, **ema, "model_ema.num_updates": torch.empty(())},
                                     "v1-5-pruned.ckpt")
    plan = _plans(sd15, sd15=source, sd15_ema=True)["unet"]
    _assert_exact(plan, _part(shapes, "reference_net."))
    assert all(v.startswith("model_ema.") for v in plan.origins.values())
    plan = _plans(sd15, sd15=source)["unet"]
    assert all(v.startswith("model.diffusion_model.") for v in plan.origins.values())
    assert any("EMA" in note for note in plan.notes)


def test_sd15_diffusers_unet_file_maps_one_to_one(sd15, shapes):
    plan = _plans(sd15, sd15=WeightFile.from_tensors(_manifest("sd15_unet_keys.json"), "unet.safetensors"),
                  vae=WeightFile.from_tensors(_meta(sd15.vae.state_dict()), "vae.safetensors"))["unet"]
    _assert_exact(plan, _part(shapes, "reference_net."))
    assert all(k == v for k, v in plan.origins.items())


def test_diffusers_unet_config_is_runwayml_config(sd15):
    path = WEIGHT_KEYS / "sd15_unet_config.json"
    if not path.is_file():
        missing_fixture(f"shared fixture {path}")
    reference = json.loads(path.read_text())
    ours = diffusers_unet_config(sd15.config.unet)
    defaults = {"use_linear_projection": False, "transformer_layers_per_block": 1}
    assert {k: v for k, v in ours.items()} == {k: reference.get(k, defaults.get(k)) for k in ours}


@pytest.mark.parametrize("layout", ["ldm", "ldm_in_sd_file", "diffusers_old_names", "diffusers"])
def test_vae_layouts(sd15, shapes, layout):
    state = _meta(sd15.vae.state_dict())
    files = {
        "ldm": lambda: formats.vae_to_ldm(state, sd15.config),
        "ldm_in_sd_file": lambda: formats.vae_to_ldm(state, sd15.config, prefix="first_stage_model."),
        "diffusers_old_names": lambda: formats.vae_to_legacy_diffusers(state),
        "diffusers": lambda: state,
    }
    source = files[layout]()
    if layout == "diffusers_old_names":
        assert "encoder.mid_block.attentions.0.query.weight" in source
    plan = _plans(sd15, vae=WeightFile.from_tensors(source, "vae-ft-mse-840000-ema-pruned.safetensors"))["vae"]
    _assert_exact(plan, _part(shapes, "vae."))


def test_animatediff_v2_fills_every_temporal_module(sd15, shapes):
    plan = _plans(sd15, motion_module=WeightFile.from_tensors(_manifest("animatediff_mm_sd_v15_v2_keys.json"),
                                                                "mm_sd_v15_v2.ckpt"))["motion_module"]
    temporal = {k: s for k, s in _part(shapes, "backbone.").items()
                if ".motion_modules." in k and ".speed_" not in k}
    _assert_exact(plan, temporal)
    assert len(plan.computed) == 42  # every positional table regenerated (21 modules x 2 attentions)
    assert "v2" in plan.found


def test_animatediff_v1_without_mid_block_and_24_frame_tables(sd15, shapes):
    v2 = _manifest("animatediff_mm_sd_v15_v2_keys.json")
    v1 = {k: (torch.empty(1, 24, t.shape[-1], device="meta") if k.endswith(".pe") else t)
          for k, t in v2.items() if not k.startswith("mid_block.")}
    plan = _plans(sd15, motion_module=WeightFile.from_tensors(v1, "mm_sd_v15.ckpt"))["motion_module"]
    temporal = {k: s for k, s in _part(shapes, "backbone.").items()
                if ".motion_modules." in k and ".speed_" not in k}
    mid = [k for k in temporal if k.startswith("mid_block.")]
    _assert_exact(plan, temporal, allow_missing=mid)
    assert all(plan.computed[k].shape[1] == 32 for k in plan.computed)
    assert any("mid_block.motion_modules.0" in n for n in plan.notes)
    assert any("24 frames" in n for n in plan.notes)


def test_diffusers_motion_adapter_layout(sd15, shapes):
    from diffusers import MotionAdapter

    with torch.device("meta"):
        adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                                motion_mid_block_layers_per_block=1, motion_num_attention_heads=8,
                                motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
    plan = _plans(sd15, motion_module=WeightFile.from_tensors(adapter.state_dict(), "animatediff-motion-adapter"))
    temporal = {k: s for k, s in _part(shapes, "backbone.").items()
                if ".motion_modules." in k and ".speed_" not in k}
    _assert_exact(plan["motion_module"], temporal)


@pytest.mark.parametrize("old_names", [False, True])
def test_wav2vec2_base_960h_ctc_checkpoint(sd15, shapes, old_names):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    # facebook/wav2vec2-base-960h: a Wav2Vec2ForCTC with SpecAugment masking (masked_spec_embed).
    config = Wav2Vec2Config(**{**sd15.config.audio.wav2vec2, "mask_time_prob": 0.05})
    with torch.device("meta"):
        ctc = Wav2Vec2ForCTC(config)
    state = _meta(ctc.state_dict())
    assert "lm_head.weight" in state and "wav2vec2.masked_spec_embed" in state
    if old_names:
        state = formats.old_weight_norm_names(state)
        assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in state
    plan = _plans(sd15, wav2vec2=WeightFile.from_tensors(state, "wav2vec2-base-960h.safetensors"))["wav2vec2"]
    assert plan.keys() == _part(shapes, "audio_encoder.").keys()
    assert len(plan.keys()) == 210
    assert all(plan.shapes[k] == s for k, s in _part(shapes, "audio_encoder.").items())
    assert plan.notes and "lm_head" in plan.notes[0]


def test_sd2_checkpoint_is_named_and_refused(sd15, ldm_sd15):
    sd2 = dict(ldm_sd15)
    for key in [k for k in sd2 if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
        sd2[key] = torch.empty(sd2[key].shape[0], 1024, device="meta")
    with pytest.raises(WeightFileError, match=r"v2-1_512\.safetensors looks like a Stable Diffusion 2\.x"):
        plan_components(sd15, sd15=WeightFile.from_tensors(sd2, "v2-1_512.safetensors"))


def test_sdxl_unet_gives_shape_mismatches(sd15):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        sdxl = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
    with pytest.raises(WeightFileError) as error:
        plan_components(sd15, sd15=WeightFile.from_tensors(_meta(sdxl.state_dict()), "sdxl_unet.safetensors"))
    message = str(error.value)
    for part in ("sdxl_unet.safetensors does not fit", "cross-attention width 2048", "missing keys",
                 "unexpected keys", "shape mismatches", "file [640, 2048] != model [640, 768]"):
        assert part in message
