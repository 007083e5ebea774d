"""The whisper encoder read from openai's checkpoint format: every key accounted for, and one clear
error for each way a file can be wrong. Runs without fixtures (random weights made here)."""

from __future__ import annotations

import pytest
import torch

from emo.families.echomimic.whisper import WhisperDims, WhisperEncoder, check_checkpoint, load_whisper_encoder

DECODER = {"n_vocab": 16, "n_text_ctx": 8, "n_text_state": 8, "n_text_head": 1, "n_text_layer": 1}


def checkpoint(dims: WhisperDims = WhisperDims(n_audio_layer=1), seed: int = 0) -> dict:
    """An openai-format checkpoint with random weights: encoder (with ln_post) and a stand-in decoder."""
    torch.manual_seed(seed)
    encoder = WhisperEncoder(dims)
    for p in encoder.parameters():
        p.data.normal_(0, 0.05)
    state = {f"encoder.{k}": v.half() for k, v in encoder.state_dict().items()}  # openai stores fp16
    state["encoder.ln_post.weight"] = torch.ones(dims.n_audio_state, dtype=torch.half)
    state["encoder.ln_post.bias"] = torch.zeros(dims.n_audio_state, dtype=torch.half)
    state["decoder.token_embedding.weight"] = torch.randn(16, 8)
    state["decoder.blocks.0.attn.key.weight"] = torch.randn(8, 8)
    return {"dims": {**{f: getattr(dims, f) for f in dims.__dataclass_fields__}, **DECODER}, "model_state_dict": state}


class NotATensor:
    """Any Python object a weights-only load must refuse."""


def mel(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(seed))


def test_echomimic_whisper_loads_encoder_only_and_skips_ln_post(tmp_path):
    ckpt = checkpoint()
    path = tmp_path / "whisper_tiny.pt"
    torch.save(ckpt, path)
    encoder = load_whisper_encoder(path)
    # the same weights without the decoder and ln_post: they are not used
    state = {k: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.") and "ln_post" not in k}
    bare = WhisperEncoder.from_checkpoint({"dims": ckpt["dims"], "model_state_dict": state})
    assert encoder.state_dict().keys() == bare.state_dict().keys()
    assert all(torch.equal(v, bare.state_dict()[k]) for k, v in encoder.state_dict().items())
    assert all(v.dtype == torch.float32 for v in encoder.state_dict().values())
    out = encoder(mel())
    assert out.shape == (1, 1500, 2, 384)
    # the stacked outputs are the embedding, then each block, and are not normalised by ln_post
    with torch.no_grad():
        assert torch.equal(encoder.blocks[0](out[:, :, 0]), out[:, :, 1])
    assert not torch.allclose(out[0, :, -1].std(-1), torch.ones(1500), atol=0.1)


def test_echomimic_whisper_attention_is_openai_multi_head_attention():
    encoder = WhisperEncoder.from_checkpoint(checkpoint())
    attn, x = encoder.blocks[0].attn, torch.randn(2, 7, 384)
    # reference: plain scaled dot-product attention, 6 heads of 64, key without bias
    assert attn.key.bias is None and attn.heads == 6
    q, k, v = (m(x).view(2, 7, 6, 64).transpose(1, 2) for m in (attn.query, attn.key, attn.value))
    expected = attn.out(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 384))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_echomimic_whisper_half_precision_keeps_float32_norms():
    full = WhisperEncoder.from_checkpoint(checkpoint())
    half = WhisperEncoder.from_checkpoint(checkpoint()).to(torch.bfloat16)  # CPU-friendly half type
    x = torch.randn(1, 50, 384)
    with torch.no_grad():
        out = half.blocks[0](x.to(torch.bfloat16))
        assert out.dtype == torch.bfloat16 and half.blocks[0].attn_ln(x.to(torch.bfloat16)).dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), full.blocks[0](x), atol=0.05, rtol=0.02)


def test_echomimic_whisper_wrong_size_names_expected_and_found_dims():
    base = checkpoint(WhisperDims(n_audio_state=512, n_audio_head=8, n_audio_layer=1))
    with pytest.raises(ValueError, match=r"wrong whisper dimensions: EchoMimic needs whisper-tiny.*n_audio_state 384.*"
                                         r"found whisper-base dimensions \(.*n_audio_state 512, n_audio_head 8"):
        check_checkpoint(base, "whisper_tiny.pt")
    heads = checkpoint()
    heads["dims"]["n_audio_head"] = 8
    with pytest.raises(ValueError, match=r"wrong whisper dimensions.*n_audio_head 6.*n_audio_head 8"):
        check_checkpoint(heads)


def test_echomimic_whisper_dims_that_do_not_describe_the_weights():
    ckpt = checkpoint()
    ckpt["dims"]["n_audio_layer"] = 4  # the weights have one block
    with pytest.raises(ValueError, match=r"wrong whisper dimensions: n_audio_layer 4 in dims but 1 in the weights"):
        check_checkpoint(ckpt, "whisper_tiny.pt")
    ckpt = checkpoint()
    ckpt["dims"]["n_audio_state"] = 512
    with pytest.raises(ValueError, match=r"n_audio_state 512 in dims but 384 in the weights"):
        check_checkpoint(ckpt)


def test_echomimic_whisper_every_key_accounted_for():
    missing = checkpoint()
    del missing["model_state_dict"]["encoder.blocks.0.attn.query.bias"]
    with pytest.raises(ValueError, match=r"1 missing keys: blocks\.0\.attn\.query\.bias"):
        check_checkpoint(missing)
    extra = checkpoint()
    extra["model_state_dict"]["encoder.blocks.0.attn.key.bias"] = torch.zeros(384)
    with pytest.raises(ValueError, match=r"1 unexpected keys: blocks\.0\.attn\.key\.bias"):
        check_checkpoint(extra)
    stray = checkpoint()
    stray["model_state_dict"]["alignment_heads"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected entries in the whisper state dict: alignment_heads"):
        check_checkpoint(stray)
    shape = checkpoint()
    shape["model_state_dict"]["encoder.blocks.0.mlp.0.weight"] = torch.zeros(1024, 384)
    with pytest.raises(ValueError, match=r"shape mismatches: blocks\.0\.mlp\.0\.weight file \[1024, 384\]"):
        check_checkpoint(shape)


def test_echomimic_whisper_other_formats_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"not an openai whisper checkpoint .*found model\.encoder\.conv1\.weight"):
        check_checkpoint({"model.encoder.conv1.weight": torch.zeros(1)})  # a transformers-style dict
    no_dims = checkpoint()
    no_dims["dims"] = {"n_mels": 80}
    with pytest.raises(ValueError, match=r"'dims' entry should hold n_mels, n_audio_ctx"):
        check_checkpoint(no_dims)
    with pytest.raises(FileNotFoundError, match="audio_processor/whisper_tiny.pt"):
        load_whisper_encoder(tmp_path / "nothing.pt")

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"dims": {}, "model_state_dict": {"x": NotATensor()}}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_whisper_encoder(unsafe)
    truncated = tmp_path / "truncated.pt"
    torch.save(checkpoint(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated"):
        load_whisper_encoder(truncated)
