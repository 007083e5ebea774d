"""Hallo2's and JoyHallo's audio front ends against the numbers their own code computed on tiny
random wav2vec2 models: tests/fixtures/hallo2_audio (inference_long.py's 60 s pieces, here 1 s
pieces) and tests/fixtures/joyhallo_audio (Hallo's AudioProcessor in JoyHallo's copy, with
chinese-wav2vec2-base's geometry); EMO_HALLO2_AUDIO_FIXTURES / EMO_JOYHALLO_AUDIO_FIXTURES
name other folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from emo.families.hallo.audio import hallo_audio_features
from emo.families.hallo.hallo2 import hallo2_audio_features, segment_bounds
from tests.emo.families.hallo.test_hallo_audio import load_fixture
from tests.helpers import REPO, discover, missing_fixture

HALLO2 = Path(os.environ.get("EMO_HALLO2_AUDIO_FIXTURES", REPO / "tests" / "fixtures" / "hallo2_audio"))
JOYHALLO = Path(os.environ.get("EMO_JOYHALLO_AUDIO_FIXTURES", REPO / "tests" / "fixtures" / "joyhallo_audio"))
HALLO2_FILES = discover(HALLO2, "*.safetensors")
JOYHALLO_FILES = discover(JOYHALLO, "*.safetensors")


def _close(actual, expected, atol):
    assert actual.shape == expected.shape
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


@pytest.fixture(scope="module", params=HALLO2_FILES or [None], ids=[p.stem for p in HALLO2_FILES] or ["none"])
def hallo2(request):
    if request.param is None:
        missing_fixture(f"Hallo2 audio fixtures (*.safetensors in {HALLO2})")
    return load_fixture(request.param)


@pytest.fixture(scope="module", params=JOYHALLO_FILES or [None], ids=[p.stem for p in JOYHALLO_FILES] or ["none"])
def joyhallo(request):
    if request.param is None:
        missing_fixture(f"JoyHallo audio fixtures (*.safetensors in {JOYHALLO})")
    return load_fixture(request.param)


def _hallo2(fixture, **kwargs):
    run = fixture["run"]
    return hallo2_audio_features(fixture["model"], fixture["waveform"], run["file_sample_rate"], run["fps"],
                                 clip_length=run["clip_length"], segment_seconds=run["segment_seconds"],
                                 normalize=run["normalize"], **kwargs)


def test_hallo2_audio_pieces_match_hallo2(hallo2):
    t, run = hallo2["t"], hallo2["run"]
    result = _hallo2(hallo2)
    assert result.num_frames == run["audio_length"] == int(t["output.audio_length"])
    _close(result.features, t["output.audio_emb"], 1e-5)
    start = 0
    for k, piece in enumerate(run["segments"]):  # each piece on its own
        expected = t[f"inter.segment.{k}.audio_emb"]
        _close(result.features[start:start + expected.shape[0]], expected, 1e-5)
        start += expected.shape[0]


def test_hallo2_audio_cut_points_follow_pydub(hallo2):
    run = hallo2["run"]
    bounds = segment_bounds(run["file_samples"], run["file_sample_rate"], run["segment_seconds"])
    assert [end - start for start, end in bounds] == [s["file_samples"] for s in run["segments"]]


def test_hallo2_audio_pieces_differ_from_one_call(hallo2):
    """Guard against a test that cannot fail: Hallo's one-call features (no pieces) differ."""
    run = hallo2["run"]
    whole = hallo_audio_features(hallo2["model"], hallo2["waveform"], run["file_sample_rate"], run["fps"],
                                 clip_length=run["clip_length"], normalize=run["normalize"])
    expected = hallo2["t"]["output.audio_emb"]
    n = min(whole.features.shape[0], expected.shape[0])
    assert (whole.features[:n] - expected[:n]).abs().max() > 1e-3


def test_hallo2_segment_bounds_round_like_pydub():
    assert segment_bounds(16000 * 150, 16000, 60) == [(0, 960000), (960000, 1920000), (1920000, 2400000)]
    assert segment_bounds(44100 * 60, 44100, 60) == [(0, 2646000)]  # one piece: Hallo's own result
    assert segment_bounds(16007, 16000, 1) == [(0, 16000)]  # 1000.4 ms -> 1000 ms: the tail is dropped
    with pytest.raises(ValueError, match="segment_seconds"):
        segment_bounds(16000, 16000, 0)
    with pytest.raises(ValueError, match="empty"):
        hallo2_audio_features(None, torch.zeros(0), 16000)


def test_joyhallo_audio_matches_joyhallo(joyhallo):
    t, run = joyhallo["t"], joyhallo["run"]
    result = hallo_audio_features(joyhallo["model"], joyhallo["waveform"], run["file_sample_rate"], run["fps"],
                                  clip_length=run["clip_length"], normalize=run["normalize"])
    assert result.num_frames == run["audio_length"]
    _close(result.features, t["output.audio_emb"], 1e-5)


def test_hallo_lineage_audio_follows_the_options(hallo2):
    from emo.families.hallo.hallo2 import lineage_audio_features
    from emo.families.hallo.options import HalloOptions

    run = hallo2["run"]
    args = (hallo2["model"], hallo2["waveform"], run["file_sample_rate"], run["fps"])
    kwargs = dict(clip_length=run["clip_length"], normalize=run["normalize"])
    pieces = lineage_audio_features(HalloOptions(variant="hallo2", audio_segment_seconds=run["segment_seconds"]),
                                    *args, **kwargs)
    _close(pieces.features, hallo2["t"]["output.audio_emb"], 1e-5)
    whole = lineage_audio_features(HalloOptions(), *args, **kwargs)
    assert torch.equal(whole.features, hallo_audio_features(*args, **kwargs).features)
