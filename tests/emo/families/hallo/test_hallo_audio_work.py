"""Hallo's audio modules skip work without changing the result: a region term runs only where its
mask is not 0 (`RegionAudioInputs.support`) and rows with all-zero audio tokens are not attended
(`RegionAudioInputs.silent`). Compared here with the dense path on random modules."""

from __future__ import annotations

import pytest
import torch

from emo.families.hallo.audio_modules import (
    RegionAudioBlock,
    RegionAudioInputs,
    RegionAudioModule,
    mask_support,
)

H = W = 4
FRAMES = 3


def _block(shared: bool, seed: int = 0) -> RegionAudioBlock:
    torch.manual_seed(seed)
    block = RegionAudioBlock(16, 2, 8, shared_attention=shared).eval()
    with torch.no_grad():
        for p in block.parameters():  # the zero-initialised convs too
            p.normal_(0, 0.3)
    return block


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * FRAMES, H * W, 16, generator=g)
    tokens = torch.randn(2 * FRAMES, 5, 8, generator=g)
    tokens[:FRAMES] = 0  # guidance's unconditional video hears nothing
    masks = []
    for k, covered in enumerate((H * W, 7, 2)):  # full covers every pixel, face some, lip a few
        m = torch.zeros(1, H * W)
        m[0, k:k + covered] = torch.rand(min(covered, H * W - k), generator=g) + 0.1
        masks.append(m)
    return x, tokens, masks


@pytest.mark.parametrize("shared", [False, True], ids=["hallo", "joyhallo"])
@pytest.mark.parametrize("scales", [(0.7, 1.1, 1.3), None], ids=["scaled", "unscaled"])
def test_skipped_work_gives_the_dense_result(shared, scales):
    block, (x, tokens, masks) = _block(shared), _inputs()
    support = mask_support([masks])[0]
    with torch.no_grad():
        dense = block(x, tokens, masks, scales, H, W)
        for kwargs in ({"support": support}, {"silent": (True, False)}, {"support": support, "silent": (True, False)}):
            out = block(x, tokens, masks, scales, H, W, **kwargs)
            assert torch.allclose(out, dense, atol=1e-6, rtol=1e-6), kwargs


def test_silent_rows_are_not_attended():
    """Proof that the silent rows skip attention: told a row with real audio is silent, the block
    gives what zero audio would, not what the audio says."""
    block, (x, tokens, masks) = _block(False), _inputs()
    loud = tokens.clone()
    loud[:FRAMES] = torch.randn(FRAMES, 5, 8)
    with torch.no_grad():
        as_silent = block(x, loud, masks, None, H, W, silent=(True, False))
        zero_audio = block(x, tokens, masks, None, H, W)
        heard = block(x, loud, masks, None, H, W)
    assert torch.allclose(as_silent, zero_audio, atol=1e-6)
    assert not torch.allclose(as_silent[:FRAMES], heard[:FRAMES], atol=1e-3)
    assert torch.equal(as_silent[FRAMES:], block(x, loud, masks, None, H, W, silent=(False, False))[FRAMES:])


def test_attention_runs_on_the_mask_pixels_of_the_sounding_rows_only():
    block, (x, tokens, masks) = _block(False), _inputs()
    support = mask_support([masks])[0]
    seen = {}
    for k in range(3):
        getattr(block, f"attn2_{k}").register_forward_hook(
            lambda module, args, out, k=k: seen.setdefault(k, []).append(tuple(args[0].shape)))
    with torch.no_grad():
        block(x, tokens, masks, None, H, W, support=support, silent=(True, False))
    assert seen == {0: [(FRAMES, H * W, 16)], 1: [(FRAMES, 7, 16)], 2: [(FRAMES, 2, 16)]}


def test_mask_support():
    full, some = torch.ones(1, 6), torch.tensor([[0.0, 0.5, 0.0, 0.0, 1.0, 0.0]])
    (support,) = mask_support([[full, some, torch.zeros(1, 6)]])
    assert support[0] is None  # every pixel: run dense
    assert support[1].tolist() == [1, 4]
    assert support[2].numel() == 0
    with pytest.raises(ValueError, match=r"\(1, H\*W\)"):
        mask_support([[torch.ones(2, 6), some, some]])


def test_an_empty_mask_leaves_only_the_bias():
    block, (x, tokens, masks) = _block(False), _inputs()
    masks = [masks[0], masks[1], torch.zeros(1, H * W)]
    with torch.no_grad():
        dense = block(x, tokens, masks, None, H, W)
        sparse = block(x, tokens, masks, None, H, W, support=mask_support([masks])[0], silent=(True, False))
    assert torch.allclose(sparse, dense, atol=1e-6)


def test_module_reads_support_and_silent_from_its_inputs():
    torch.manual_seed(0)
    module = RegionAudioModule(16, 16, 2, 8, groups=4).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    x, tokens, masks = _inputs()
    hidden = x.transpose(1, 2).reshape(2 * FRAMES, 16, H, W)
    plain = RegionAudioInputs(tokens, [masks], (1.0, 1.0, 1.0))
    skipping = RegionAudioInputs(tokens, [masks], (1.0, 1.0, 1.0), support=mask_support([masks]), silent=(True, False))
    with torch.no_grad():
        assert torch.allclose(module(hidden, skipping, 0), module(hidden, plain, 0), atol=1e-6)
