"""Hallo's audio front end against the numbers Hallo's own code computed
(tests/fixtures/hallo_audio: AudioProcessor.preprocess on tiny random wav2vec2 models)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emo.audio import resample, window
from emo.families.hallo.audio import HalloAudio, hallo_audio_features, hallo_frame_count
from tests.helpers import REPO, discover, missing_fixture

FIXTURES = Path(os.environ.get("EMO_HALLO_AUDIO_FIXTURES", REPO / "tests" / "fixtures" / "hallo_audio"))
FIXTURE_FILES = discover(FIXTURES, "*.safetensors")


def load_fixture(path: Path) -> dict:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    meta = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path))
    model = Wav2Vec2Model(Wav2Vec2Config(**meta["wav2vec2_config"]))
    state = {k[len("wav2vec2."):]: v for k, v in tensors.items() if k.startswith("wav2vec2.")}
    model.load_state_dict(state, strict=True)
    model.eval()
    run = meta["run"]
    waveform = tensors["input.pcm_s16"].float() / 32768  # what librosa reads from the 16-bit file
    return {"meta": meta, "t": tensors, "model": model, "waveform": waveform, "run": run}


@pytest.fixture(scope="module", params=FIXTURE_FILES or [None], ids=[p.stem for p in FIXTURE_FILES] or ["none"])
def fixture(request):
    if request.param is None:
        missing_fixture(f"Hallo audio fixtures (*.safetensors in {FIXTURES})")
    return load_fixture(request.param)


def _features(fixture, **kwargs) -> HalloAudio:
    run = fixture["run"]
    return hallo_audio_features(fixture["model"], fixture["waveform"], run["file_sample_rate"], run["fps"],
                                clip_length=run["clip_length"], **kwargs)


def _assert_close(actual, expected, atol):
    assert actual.shape == expected.shape
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


def test_audio_emb_matches_hallo(fixture):
    t, run = fixture["t"], fixture["run"]
    result = _features(fixture)
    assert result.num_frames == run["audio_length"] == int(t["output.audio_length"])
    assert result.features.shape[0] == run["seq_len"]
    assert result.padded_frames == run["seq_len"] - run["audio_length"]
    _assert_close(result.features, t["output.audio_emb"], 1e-5)


def test_windows_match_hallo(fixture):
    features = fixture["t"]["output.audio_emb"]
    windows = window(features, range(features.shape[0]), 2)
    assert torch.equal(windows, fixture["t"]["output.audio_emb_windowed"])


def test_resampling_matches_librosa(fixture):
    """librosa.load(sr=16000): channel mean, then soxr HQ, length ceil(T * 16000 / rate)."""
    run, t = fixture["run"], fixture["t"]
    mono = fixture["waveform"].mean(dim=0)
    resampled = resample(mono, run["file_sample_rate"], 16000)
    _assert_close(resampled, t["inter.librosa_loaded"], 1e-6)


def test_chunked_computation_gives_the_same_numbers(fixture):
    """Long clips run the CNN in chunks and attention in query blocks; tiny chunks here force both."""
    result = _features(fixture, cnn_chunk_seconds=0.1, attention_bytes=4 * 2 * 7)
    _assert_close(result.features, fixture["t"]["output.audio_emb"], 1e-5)


def test_padding_to_whole_clips_changes_every_frame(fixture):
    """Guard against a test that cannot fail: the clip padding reaches all frames through the
    interpolation grid and attention, so leaving it out breaks parity."""
    run = fixture["run"]
    if run["seq_len"] == run["audio_length"]:
        pytest.skip("this fixture has no clip padding")
    unpadded = hallo_audio_features(fixture["model"], fixture["waveform"], run["file_sample_rate"], run["fps"],
                                    clip_length=0)
    assert unpadded.features.shape[0] == run["audio_length"]
    expected = fixture["t"]["output.audio_emb"][: run["audio_length"]]
    assert (unpadded.features - expected).abs().amax(dim=(1, 2)).min() > 1e-4


def test_frame_count_keeps_hallos_float_rounding():
    assert hallo_frame_count(36800) == 58  # 57.5 frames
    assert hallo_frame_count(35200) == 56  # exactly 55 frames, but 35200 / 16000 * 25 = 55.000000000000007
    assert hallo_frame_count(16000) == 25
    assert hallo_frame_count(0) == 0


def test_bad_inputs_raise_clear_errors():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=8, conv_dim=(4,) * 7,
                                         num_conv_pos_embedding_groups=2)).eval()
    with pytest.raises(ValueError, match="whole number of frames"):
        hallo_audio_features(model, torch.zeros(1, 16000), 16000, 29.97)
    with pytest.raises(ValueError, match="too short"):
        hallo_audio_features(model, torch.ones(1, 200), 16000, 25, clip_length=0)
    with pytest.raises(ValueError, match="empty"):
        hallo_audio_features(model, torch.zeros(1, 0), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        hallo_audio_features(model, torch.zeros(1, 800), 0)


def _hallo_model_with(wav2vec2_model):
    """A tiny Hallo EMOModel (fixture B's architecture, when present) whose audio encoder is
    `wav2vec2_model` and whose audio projection reads its layers."""
    from emo.config import EMOConfig
    from emo.families.hallo.convert import hallo_config
    from emo.model import EMOModel

    cfg = wav2vec2_model.config.to_dict()
    wav2vec2 = {k: cfg[k] for k in EMOConfig.preset("tiny").audio.wav2vec2 if k in cfg}
    tiny = EMOConfig.preset("tiny")
    unet = {"block_out_channels": [32, 32], "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "layers_per_block": 1, "attention_head_dim": [2, 4], "cross_attention_dim": 8, "norm_num_groups": 8}
    extra = {"audio_attention_dim": 8, "motion_module_kwargs": {"num_attention_heads": 2}}
    config = hallo_config(unet, extra, face_locator={"block_out_channels": (8, 8, 8, 32)},
                          imageproj={"clip_embeddings_dim": 8, "clip_extra_context_tokens": 2},
                          audioproj={"seq_len": 5, "blocks": cfg["num_hidden_layers"], "channels": cfg["hidden_size"],
                                     "intermediate_dim": 8, "output_dim": 8, "context_tokens": 2},
                          wav2vec2=wav2vec2, vae=tiny.vae)
    torch.manual_seed(0)
    model = EMOModel(config).eval()
    model.audio_encoder.load_state_dict(wav2vec2_model.state_dict())
    return model


def test_hallo_family_audio_path_is_hallos(fixture):
    """End to end: EMOPipeline.encode_audio of a Hallo model gives Hallo's audio_emb for the frames
    the audio covers (the clip padding is in the transformer's context, as in Hallo)."""
    from emo.pipeline import EMOPipeline

    run, t = fixture["run"], fixture["t"]
    if run["clip_length"] <= 0:
        pytest.skip("this fixture has no clip length (Hallo's get_embedding path)")
    model = _hallo_model_with(fixture["model"])
    model.config.defaults.frames_per_clip = run["clip_length"]
    audio = EMOPipeline(model).encode_audio(fixture["waveform"], run["file_sample_rate"], run["fps"])
    assert audio.num_frames == run["audio_length"]
    _assert_close(audio.features, t["output.audio_emb"][: run["audio_length"]], 1e-5)
    # EMO's own front end (transformer at 50 Hz, resampled after) is not Hallo's.
    from emo.audio import encode_audio

    emo_features = encode_audio(model.audio_encoder, fixture["waveform"], run["file_sample_rate"], run["fps"]).features
    assert (emo_features[: run["audio_length"]] - audio.features).abs().max() > 1e-3
    with pytest.raises(ValueError, match="whole number"):
        EMOPipeline(model).encode_audio(fixture["waveform"], run["file_sample_rate"], 29.97)
