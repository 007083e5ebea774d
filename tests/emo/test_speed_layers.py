"""Speed layers: the per-video key/value cross-attention equals the per-pixel formulation it
replaced, and the speed buckets stay float32 whatever dtype the model is cast to."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from emo.config import SpeedConfig
from emo.models import temporal
from emo.models.speed import SpeedEncoder, bucket_encode
from emo.model import EMOModel
from emo.pipeline import EMOPipeline
from tests.emo.test_models import _run


def per_pixel_speed_attention(attn: Attention, x: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """The formulation before the fix: the speed tokens copied to every pixel, then diffusers'
    own attention processor (keys and values projected at every pixel)."""
    return attn(x, encoder_hidden_states=speed.repeat_interleave(x.shape[0] // speed.shape[0], dim=0))


def _random_attention(seed: int) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(query_dim=32, cross_attention_dim=24, heads=4, dim_head=8, bias=False, out_bias=True)
    with torch.no_grad():
        attn.to_out[0].weight.normal_()  # the layer starts at zero: give it a value
        attn.to_out[0].bias.normal_()
    return attn.eval()


@pytest.mark.parametrize("videos, pixels, frames, speed_tokens", [(1, 5, 6, 6), (3, 7, 4, 4), (2, 1, 3, 5)])
def test_per_video_keys_equal_per_pixel_keys(videos, pixels, frames, speed_tokens):
    attn = _random_attention(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(videos * pixels, frames, 32, generator=g)
    speed = torch.randn(videos, speed_tokens, 24, generator=g)
    with torch.no_grad():
        fast = temporal.speed_cross_attention(attn, x, speed)
        slow = per_pixel_speed_attention(attn, x, speed)
    assert fast.shape == slow.shape == (videos * pixels, frames, 32)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # Each video's pixels use that video's speed: swapping the videos' speeds changes the output.
    if videos > 1:
        with torch.no_grad():
            swapped = temporal.speed_cross_attention(attn, x, speed.flip(0))
        assert (swapped - fast).abs().max() > 1e-3


def test_speed_attention_rejects_rows_that_do_not_split():
    with pytest.raises(ValueError, match="do not split over 2 videos"):
        temporal.speed_cross_attention(_random_attention(0), torch.zeros(5, 3, 32), torch.zeros(2, 3, 24))


def test_backbone_output_unchanged_by_the_per_video_keys(tiny_model, monkeypatch):
    """The tiny backbone (random speed layers, guidance batch of 2) gives the same prediction with
    the per-pixel formulation patched back in."""
    g = torch.Generator().manual_seed(1)
    cfg = tiny_model.config
    frames, side = 6, 8
    x = {
        "ref_latents": torch.randn(1, 1, 4, side, side, generator=g),
        "motion_latents": torch.randn(1, 2, 4, side, side, generator=g),
        "sample": torch.randn(2, 4, frames, side, side, generator=g),
        "tokens": torch.randn(1, frames, cfg.audio.num_tokens, cfg.unet.cross_attention_dim, generator=g),
        "mask": torch.zeros(1, 1, side * 8, side * 8).index_fill_(2, torch.arange(16, 48), 1.0),
        "speed": torch.linspace(0.1, 1.5, 2 + frames)[None],
    }
    assert all(torch.count_nonzero(b.speed_attention.to_out[0].weight) > 0
               for b in tiny_model.backbone.modules() if isinstance(b, temporal.TemporalTransformerBlock))
    fast = _run(tiny_model, x)
    monkeypatch.setattr(temporal, "speed_cross_attention", per_pixel_speed_attention)
    slow = _run(tiny_model, x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    other_speed = _run(tiny_model, x, speed=x["speed"].flip(1))  # the test can fail: speed matters
    assert (other_speed - slow).abs().max() > 1e-4


# ---- buckets in float32 ------------------------------------------------------------------

BUCKETS = SpeedConfig(bucket_centers=(0.0, 0.4, 0.8, 1.2), bucket_radii=(0.2, 0.4, 0.3, 0.7),
                      window_radius=1, hidden_dim=16, embed_dim=8)


@pytest.mark.parametrize("cast", [lambda m: m.to(torch.bfloat16), lambda m: m.half(),
                                  lambda m: nn.Sequential(m).to(dtype=torch.bfloat16)[0]],
                         ids=["to-bf16", "half", "parent-to-bf16"])
def test_buckets_stay_float32_when_the_model_is_cast(cast):
    torch.manual_seed(0)
    encoder = cast(SpeedEncoder(BUCKETS))
    assert encoder.mlp[0].weight.dtype in (torch.bfloat16, torch.float16)
    assert encoder.bucket_centers.dtype == encoder.bucket_radii.dtype == torch.float32
    assert encoder.bucket_centers.tolist() == list(torch.tensor(BUCKETS.bucket_centers).tolist())
    assert encoder.bucket_radii.tolist() == list(torch.tensor(BUCKETS.bucket_radii).tolist())
    assert encoder.state_dict()["bucket_centers"].dtype == torch.float32


def test_bf16_model_gets_the_float32_codes():
    """The MLP of a bf16 encoder sees exactly the fp32 codes (rounded once, to bf16, at its input);
    with bf16 buckets a speed of 0.39 would fall on the other side of the 0.4 bucket."""
    torch.manual_seed(0)
    fp32 = SpeedEncoder(BUCKETS)
    bf16 = SpeedEncoder(BUCKETS)
    bf16.load_state_dict(fp32.state_dict())
    bf16.to(torch.bfloat16)
    speed = torch.tensor([[0.0, 0.39, 0.401, 0.41, 1.19, 1.2, 1.201, 2.0]])
    expected = bucket_encode(speed, torch.tensor(BUCKETS.bucket_centers), torch.tensor(BUCKETS.bucket_radii))
    assert torch.equal(bucket_encode(speed, bf16.bucket_centers, bf16.bucket_radii), expected)
    seen = {}
    bf16.mlp[0].register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0]))
    bf16(speed)
    window = torch.cat([expected[:, [0, 0, 1, 2, 3, 4, 5, 6]], expected, expected[:, [1, 2, 3, 4, 5, 6, 7, 7]]], -1)
    assert torch.equal(seen["input"], window.to(torch.bfloat16))
    # What the fix prevents: rounded buckets give other codes.
    rounded = bucket_encode(speed, torch.tensor(BUCKETS.bucket_centers).bfloat16().float(),
                            torch.tensor(BUCKETS.bucket_radii).bfloat16().float())
    assert (rounded - expected).abs().max() > 1e-2


def test_buckets_follow_the_device_and_survive_meta_and_to_empty():
    with torch.device("meta"):
        encoder = SpeedEncoder(BUCKETS)
    encoder.to(torch.bfloat16)
    assert encoder.bucket_centers.is_meta and encoder.bucket_centers.dtype == torch.float32
    encoder.to_empty(device="cpu")
    encoder.reset_buffers()
    assert encoder.bucket_centers.device.type == "cpu"
    assert encoder.bucket_centers.tolist() == list(torch.tensor(BUCKETS.bucket_centers).tolist())


def test_a_pipeline_dtype_leaves_the_callers_model_as_it_was():
    model = EMOModel.from_preset("tiny", seed=0)
    pipe = EMOPipeline(model, dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.model is not model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert EMOPipeline(model, dtype=torch.float32).model is model  # no copy when nothing changes
