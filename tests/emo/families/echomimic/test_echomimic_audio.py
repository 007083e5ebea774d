"""EchoMimic's whisper audio front end against the parity fixtures (EchoMimic's own numbers), and
the rules the fixtures cannot show: 30 s segmentation of long audio, chunk counts at other rates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emo.audio import frame_count
from emo.families.echomimic import audio as echo_audio
from emo.families.echomimic.audio import (
    chunk_indices,
    encode_echomimic_audio,
    feature_chunks,
    log_mel,
    whisper_features,
)
from emo.families.echomimic.whisper import WhisperDims, WhisperEncoder
from tests.emo.families.echomimic.fixtures import fixture_files, read_fixture, whisper_checkpoint
from tests.helpers import missing_fixture

TOL = dict(atol=1e-5, rtol=1e-5)  # the fixtures' suggested tolerance for whisper intermediates


def fixtures(audio_input: str | None = None):
    found = []
    for path in fixture_files():
        tensors, meta = read_fixture(path)
        if audio_input is None or meta["run"]["audio_input"] == audio_input:
            found.append((path.stem, tensors, meta))
    if not found:
        missing_fixture(f"EchoMimic parity fixtures ({audio_input or 'any'} audio input)")
    return found


@pytest.fixture(scope="module")
def waveform_fixtures():
    torch.set_num_threads(1)  # the fixtures were made with one thread
    return [(name, tensors, meta, WhisperEncoder.from_checkpoint(whisper_checkpoint(tensors, meta), name))
            for name, tensors, meta in fixtures("waveform")]


def test_echomimic_log_mel_matches_fixture(waveform_fixtures):
    for name, tensors, _, _ in waveform_fixtures:
        expected = tensors["inter.log_mel"]
        got = log_mel(tensors["input.waveform"])
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, **TOL, msg=name)
        # the float waveform is the int16 one / 32768, as whisper's load_audio gives it
        torch.testing.assert_close(log_mel(tensors["input.waveform_int16"].float() / 32768), expected, **TOL)


def test_echomimic_whisper_features_match_fixture(waveform_fixtures):
    for name, tensors, meta, encoder in waveform_fixtures:
        features = whisper_features(encoder, tensors["input.waveform"])
        expected = tensors["inter.whisper_feature"]
        assert features.shape == expected.shape == (meta["run"]["n_whisper_feature_frames"],
                                                    meta["modules"]["whisper"]["dims"]["n_audio_layer"] + 1, 384)
        torch.testing.assert_close(features, expected, **TOL, msg=name)


def test_echomimic_chunks_and_final_audio_match_fixture(waveform_fixtures):
    for name, tensors, meta, encoder in waveform_fixtures:
        run = meta["run"]
        chunks, indices = feature_chunks(whisper_features(encoder, tensors["input.waveform"]), run["fps"])
        assert torch.equal(indices, tensors["inter.whisper_chunk_indices"]), name
        assert chunks.shape[0] == run["n_chunks"]
        final = tensors["inter.audio_fea_final"][0]  # [F, 10 (L+1), 384]
        torch.testing.assert_close(chunks[:final.shape[0]], final, **TOL, msg=name)

        # EchoMimic's own frame count: min(L, n_chunks), L = the requested video length
        audio = encode_echomimic_audio(encoder, tensors["input.waveform"], run["fps"],
                                       max_frames=run["video_length_requested"], frames="echomimic")
        assert audio.num_frames == final.shape[0] == run["video_length"]
        assert audio.tokens_per_frame == final.shape[1]
        torch.testing.assert_close(audio.tokens(), final, **TOL, msg=name)
        torch.testing.assert_close(audio.tokens([2, 0]), final[[2, 0]], **TOL)


def test_echomimic_chunks_of_given_features_match_fixture():
    for name, tensors, meta in fixtures():
        features = tensors.get("input.whisper_feature", tensors.get("inter.whisper_feature"))
        chunks, indices = feature_chunks(features, meta["run"]["fps"])
        assert torch.equal(indices, tensors["inter.whisper_chunk_indices"]), name
        final = tensors["inter.audio_fea_final"][0]
        assert torch.equal(chunks[:final.shape[0]], final), name  # a gather: exact


def test_echomimic_audio_frame_rules_differ_only_in_length(waveform_fixtures):
    name, tensors, meta, encoder = waveform_fixtures[0]
    fps = meta["run"]["fps"]
    waveform = tensors["input.waveform"]
    ours = encode_echomimic_audio(encoder, waveform, fps)
    theirs = encode_echomimic_audio(encoder, waveform, fps, frames="echomimic")
    assert ours.num_frames == frame_count(waveform.shape[0], 16000, fps)
    assert theirs.num_frames == meta["run"]["n_chunks"] > ours.num_frames
    assert torch.equal(theirs.tokens()[:ours.num_frames], ours.tokens())
    assert encode_echomimic_audio(encoder, waveform, fps, max_frames=3).num_frames == 3


# --- rules beyond the fixtures ---------------------------------------------------------------------


def tiny_encoder(seed: int = 0) -> WhisperEncoder:
    """Real geometry in time (80 mels, 1500 frames), narrow in width to keep the test fast."""
    torch.manual_seed(seed)
    encoder = WhisperEncoder(WhisperDims(n_audio_state=32, n_audio_head=2, n_audio_layer=1))
    encoder.positional_embedding.normal_()
    return encoder.eval()


def speech_like(seconds: float, seed: int = 0, extra_samples: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000) + extra_samples) / 16000
    return 0.3 * torch.sin(2 * math.pi * 220 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t)) \
        + 0.01 * torch.randn(t.shape, generator=generator)


def test_echomimic_long_audio_is_encoded_per_30_s_segment():
    encoder = tiny_encoder()
    waveform = speech_like(65, extra_samples=170)  # 6501 mel frames: segments of 3000, 3000, 501
    waveform[16000 * 40:] *= 0.001  # quiet after 40 s: the floor must come from the whole clip

    # Reference, written out directly: one centred STFT of the whole clip, global floor, then
    # each 3000-frame segment padded, encoded and cut to half its own length.
    spec = torch.stft(waveform, 400, 160, window=torch.hann_window(400), return_complex=True)[:, :-1]
    mel = (echo_audio.mel_filterbank() @ spec.abs() ** 2).clamp(min=1e-10).log10()
    mel = (torch.maximum(mel, mel.max() - 8) + 4) / 4
    assert mel.shape[1] == 6501
    torch.testing.assert_close(log_mel(waveform), mel, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = torch.cat([encoder(F.pad(mel[:, s:s + 3000], (0, 3000 - mel[:, s:s + 3000].shape[1]))[None])[0, :n]
                              for s, n in ((0, 1500), (3000, 1500), (6000, 250))])

    calls = []
    handle = encoder.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    got = whisper_features(encoder, waveform, progress=lambda done, total: calls.append((done, total)))
    handle.remove()
    assert got.shape == (3250, 2, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # one 30 s segment at a time
    assert calls == [(1, 80, 3000), (1, 3), (1, 80, 3000), (2, 3), (1, 80, 3000), (3, 3)]

    # the test tells a global floor from a per-segment one: flooring the last segment on its own
    # gives other values for the quiet part
    last = (echo_audio.mel_filterbank() @ spec[:, 6000:].abs() ** 2).clamp(min=1e-10).log10()
    per_segment = (torch.maximum(last, last.max() - 8) + 4) / 4
    assert not torch.allclose(per_segment, mel[:, 6000:], atol=1e-3)


def test_echomimic_chunk_indices_by_hand():
    # 25 fps: centres 0, 2, 4, ...; the loop stops after the first i with 2 i > n (n = 10: i = 6)
    indices = chunk_indices(10, 25)
    assert indices.shape == (7, 10)
    assert indices[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert indices[3].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 9, 9]
    assert indices[6].tolist() == [8, 9, 9, 9, 9, 9, 9, 9, 9, 9]
    # 24 fps: centre int(i * 50 / 24)
    assert chunk_indices(100, 24)[5].tolist() == [x - 4 for x in range(10, 20)]  # int(250 / 24) = 10


@pytest.mark.parametrize("fps", [24, 25, 30, 12.5, 29.97, 24000 / 1001, 60])
def test_echomimic_has_a_chunk_for_every_video_frame_of_the_audio(fps):
    # n whisper frames = samples // 320 (one segment); our frame count must never outrun the chunks
    for samples in list(range(320, 20000, 97)) + [480000, 480000 + 319, 16000 * 65 + 170]:
        mel_frames = samples // 160
        n = sum(min(3000, mel_frames - s) // 2 for s in range(0, mel_frames, 3000))
        n_chunks = chunk_indices(n, fps).shape[0]
        assert frame_count(samples, 16000, fps) + 1 <= n_chunks <= frame_count(samples, 16000, fps) + 3, (samples, fps)


def test_echomimic_mel_filterbank_is_librosas_slaney_table():
    # openai's mel_filters.npz is librosa.filters.mel(sr=16000, n_fft=400, n_mels=80); ours is
    # computed without librosa (not a runtime dependency) and must be the same table, bit for bit
    librosa_filters = pytest.importorskip("librosa.filters")
    expected = librosa_filters.mel(sr=16000, n_fft=400, n_mels=80)
    got = echo_audio.mel_filterbank()
    assert got.dtype == torch.float32 and got.shape == (80, 201)
    assert torch.equal(got, torch.from_numpy(expected))


def test_echomimic_audio_rejects_bad_input():
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="at least 320 samples"):
        log_mel(torch.zeros(319))
    with pytest.raises(ValueError, match=r"mono waveform .* shape \(2, 16000\)"):
        log_mel(torch.zeros(2, 16000))
    with pytest.raises(ValueError, match="int16"):
        log_mel(torch.zeros(16000, dtype=torch.int16))
    with pytest.raises(ValueError, match="frames must be one of"):
        encode_echomimic_audio(encoder, torch.zeros(16000), 25, frames="video")
    with pytest.raises(ValueError, match="fps must be a positive number"):
        chunk_indices(10, 0)
    with pytest.raises(ValueError, match="max_frames"):
        encode_echomimic_audio(encoder, torch.zeros(16000), 25, max_frames=0)


def test_echomimic_audio_changes_with_the_voice():
    encoder = tiny_encoder()
    a = whisper_features(encoder, speech_like(1.0, seed=0))
    b = whisper_features(encoder, speech_like(1.0, seed=1))
    assert a.shape == b.shape == (50, 2, 32)
    assert torch.equal(a, whisper_features(encoder, speech_like(1.0, seed=0)))  # deterministic
    assert not torch.allclose(a[:, 1], b[:, 1], atol=1e-4)
