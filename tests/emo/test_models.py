"""The networks: full-size key layout (meta device) and what each conditioning path does."""

from __future__ import annotations

import json

import pytest
import torch

from emo.config import PRESETS, EMOConfig
from emo.model import EMOModel
from emo.models.speed import bucket_encode, neighbour_window
from emo.models.temporal import SPEED_KEY_MARKER, MotionModule, sinusoidal_table

from tests.helpers import SHARED, missing_fixture

WEIGHT_KEYS = SHARED / "fixtures" / "weight_keys"


def _load_manifest(name: str) -> dict:
    path = WEIGHT_KEYS / name
    if not path.is_file():
        missing_fixture(f"shared fixture {path}")
    return {k: list(v) for k, v in json.loads(path.read_text()).items()}


@pytest.fixture(scope="module")
def sd15_meta():
    return EMOModel.from_preset("sd15", device="meta")


def _shapes(state) -> dict:
    return {k: list(v.shape) for k, v in state.items()}


def test_sd15_backbone_spatial_keys_equal_sd15_unet(sd15_meta):
    reference = _load_manifest("sd15_unet_keys.json")
    spatial = {k: v for k, v in _shapes(sd15_meta.backbone.state_dict()).items() if ".motion_modules." not in k}
    assert spatial == reference


def test_sd15_reference_net_keys_equal_sd15_unet(sd15_meta):
    assert _shapes(sd15_meta.reference_net.state_dict()) == _load_manifest("sd15_unet_keys.json")


def test_sd15_temporal_modules_equal_animatediff_v2(sd15_meta):
    reference = _load_manifest("animatediff_mm_sd_v15_v2_keys.json")
    temporal = {k: v for k, v in _shapes(sd15_meta.backbone.state_dict()).items()
                if ".motion_modules." in k and SPEED_KEY_MARKER not in k}
    assert temporal == reference
    speed_keys = [k for k in sd15_meta.backbone.state_dict() if SPEED_KEY_MARKER in k]
    assert len(speed_keys) == 21 * 7  # one speed norm + attention in each of the 21 modules


def test_sd15_config_matches_runwayml_unet_config():
    path = WEIGHT_KEYS / "sd15_unet_config.json"
    if not path.is_file():
        missing_fixture(f"shared fixture {path}")
    ref = json.loads(path.read_text())
    unet = EMOConfig.preset("sd15").unet
    assert list(unet.block_out_channels) == ref["block_out_channels"]
    assert unet.layers_per_block == ref["layers_per_block"]
    assert unet.num_attention_heads == ref["attention_head_dim"]
    assert unet.cross_attention_dim == ref["cross_attention_dim"]
    assert [("CrossAttn" in t) for t in ref["down_block_types"]] == list(unet.attention_levels)


def test_config_json_round_trip():
    for name in PRESETS:
        config = EMOConfig.preset(name)
        assert EMOConfig.from_json(config.to_json()) == config


def test_config_errors_are_specific():
    with pytest.raises(ValueError, match="unknown preset"):
        EMOConfig.preset("sdxl")
    with pytest.raises(ValueError, match="unknown config sections"):
        EMOConfig.from_dict({**EMOConfig.preset("tiny").to_dict(), "lora": {}})
    with pytest.raises(ValueError, match="one radius per centre"):
        EMOConfig.from_dict({**EMOConfig.preset("tiny").to_dict(),
                             "speed": {"bucket_centers": [0, 1], "bucket_radii": [1]}})


def test_sinusoidal_table_extends_exactly():
    short, long = sinusoidal_table(32, 8), sinusoidal_table(48, 8)
    assert torch.equal(long[:, :32], short)


def test_speed_bucket_encoding_formula():
    centers, radii = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.25])
    codes = bucket_encode(torch.tensor([[0.5]]), centers, radii)
    expected = torch.tanh(torch.tensor([(0.5 - 0.0) / 0.5 * 3, (0.5 - 1.0) / 0.25 * 3]))
    assert torch.allclose(codes[0, 0], expected)
    window = neighbour_window(torch.arange(4.0).view(1, 4, 1), radius=1)
    assert window[0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]


# ---- behaviour of the tiny model -----------------------------------------------------------

F, H = 6, 8  # frames, latent side


@pytest.fixture(scope="module")
def inputs(tiny_model):
    g = torch.Generator().manual_seed(1)
    cfg = tiny_model.config
    return {
        "ref_latents": torch.randn(1, 1, 4, H, H, generator=g),
        "motion_latents": torch.randn(1, 2, 4, H, H, generator=g),
        "sample": torch.randn(1, 4, F, H, H, generator=g).repeat(2, 1, 1, 1, 1),
        "tokens": torch.randn(1, F, cfg.audio.num_tokens, cfg.unet.cross_attention_dim, generator=g),
        "mask": torch.zeros(1, 1, H * 8, H * 8).index_fill_(2, torch.arange(16, 48), 1.0),
        "speed": torch.full((1, 2 + F), 0.5),
    }


def _run(model, inputs, **changes):
    x = {**inputs, **changes}
    with torch.no_grad():
        reference = model.reference_net(torch.cat([x["ref_latents"], x["motion_latents"]], dim=1))
        tokens = torch.cat([torch.zeros_like(x["tokens"]), x["tokens"]])
        return model.backbone(x["sample"], 500, tokens, reference=reference,
                              reference_rows=torch.tensor([False, True]),
                              speed=model.speed_encoder(x["speed"]),
                              face_features=model.face_locator(x["mask"]))


def test_reference_net_records_every_block(tiny_model, inputs):
    features = tiny_model.reference_net(torch.cat([inputs["ref_latents"], inputs["motion_latents"]], dim=1))
    attn1 = [n for n, _ in tiny_model.backbone.named_modules() if n.endswith(".attn1")]
    assert sorted(features.attention) == sorted(attn1)
    assert features.attention["down_blocks.0.attentions.0.transformer_blocks.0.attn1"].shape == (1, H * H, 32)
    motion_sites = sorted(n for n, m in tiny_model.backbone.named_modules() if isinstance(m, MotionModule))
    assert len(motion_sites) == 7  # tiny: 1 + 1 down, 1 mid, 2 + 2 up
    assert sorted(features.motion) == motion_sites
    assert features.num_motion_frames == 2


def test_backbone_output_shape_and_determinism(tiny_model, inputs):
    a, b = _run(tiny_model, inputs), _run(tiny_model, inputs)
    assert a.shape == (2, 4, F, H, H)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


def _rows_changed(a, b, tol=1e-6):
    return [(a[i] - b[i]).abs().max().item() > tol for i in range(a.shape[0])]


def test_reference_changes_only_the_conditional_row(tiny_model, inputs):
    base = _run(tiny_model, inputs)
    other = _run(tiny_model, inputs, ref_latents=inputs["ref_latents"] + 1.0)
    # Row 0 is the unconditional branch: it must not see the reference image.
    assert _rows_changed(base, other) == [False, True]


def test_audio_changes_only_the_conditional_row(tiny_model, inputs):
    base = _run(tiny_model, inputs)
    other = _run(tiny_model, inputs, tokens=inputs["tokens"].flip(1))
    assert _rows_changed(base, other) == [False, True]


@pytest.mark.parametrize("path", ["motion_latents", "mask", "speed"])
def test_motion_mask_and_speed_change_both_rows(tiny_model, inputs, path):
    changed = {
        "motion_latents": inputs["motion_latents"] * -1.0,
        "mask": 1.0 - inputs["mask"],
        "speed": torch.full_like(inputs["speed"], 1.3),
    }[path]
    base = _run(tiny_model, inputs)
    other = _run(tiny_model, inputs, **{path: changed})
    assert _rows_changed(base, other) == [True, True]


def test_backbone_runs_without_optional_conditions(tiny_model, inputs):
    with torch.no_grad():
        out = tiny_model.backbone(inputs["sample"][:1], 10, inputs["tokens"])
    assert out.shape == (1, 4, F, H, H)


def test_fresh_model_zero_init_layers_keep_pretrained_behaviour():
    """Face locator, temporal modules and speed layers start as no-ops (paper: initialised so
    that adding them does not disturb the SD/AnimateDiff weights)."""
    model = EMOModel.from_preset("tiny", seed=3)
    assert torch.count_nonzero(model.face_locator(torch.ones(1, 1, 64, 64))) == 0
    module = model.backbone.down_blocks[0].motion_modules[0]
    x = torch.randn(3, 32, 8, 8)
    assert torch.equal(module(x, num_frames=3), x)


def test_gradient_checkpointing_gives_same_gradients(tiny_model, inputs):
    def grads(flag):
        tiny_model.backbone.gradient_checkpointing = flag
        tiny_model.backbone.zero_grad()
        out = tiny_model.backbone(inputs["sample"][:1], 10, inputs["tokens"])
        out.square().mean().backward()
        return tiny_model.backbone.conv_in.weight.grad.clone()
    try:
        assert torch.allclose(grads(False), grads(True), atol=1e-6)
    finally:
        tiny_model.backbone.gradient_checkpointing = False
        tiny_model.backbone.zero_grad(set_to_none=True)
