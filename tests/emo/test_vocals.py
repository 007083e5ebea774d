"""emo.vocals: MDX-Net vocal separation against audio-separator 0.17.2's own output (the committed
fixture, made the way Hallo runs it), and the signal path on hand-made models with known outputs."""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from emo import vocals as vocals_lib
from emo.audio import load_audio
from emo.vocals import KIM_VOCAL_2, SEPARATION_SAMPLE_RATE, SeparationCancelled, separate_vocals
from tests.emo.onnx_graphs import band_mask_model, identity_model, single_op_model
from tests.helpers import require_onnxruntime

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vocal_separation"
TINY_MODEL = FIXTURE / "tiny_Kim_Vocal_2.onnx"
CHUNK = KIM_VOCAL_2.chunk_size  # 261,120 samples at 44.1 kHz
STEP = int(0.75 * CHUNK)  # audio-separator's default overlap 0.25
BIN_HZ = SEPARATION_SAMPLE_RATE / KIM_VOCAL_2.n_fft  # 5.74 Hz per STFT bin
BAND = (int(1000 / BIN_HZ), int(3000 / BIN_HZ))  # the bins the band model keeps: 1-3 kHz

require_onnxruntime()


@pytest.fixture(scope="module")
def song():
    return load_audio(FIXTURE / "song.flac")  # [2, 220799] at 48 kHz


@pytest.fixture(scope="module")
def separated(song):
    """The fixture song through our separator with the tiny model, as Hallo configures it."""
    waveform, rate = song
    return separate_vocals(waveform, rate, TINY_MODEL, spec=KIM_VOCAL_2, engine="onnxruntime")


@pytest.fixture(scope="module")
def band_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "band.onnx"
    return band_mask_model(path, KIM_VOCAL_2.dim_f, KIM_VOCAL_2.dim_t, BAND)


def tones(seconds: float, parts: dict, rate: int = SEPARATION_SAMPLE_RATE) -> np.ndarray:
    """Sum of sines {frequency Hz: amplitude}, float64 [T]."""
    t = np.arange(int(round(seconds * rate))) / rate
    return sum(a * np.sin(2 * np.pi * f * t + f / 100.0) for f, a in parts.items())


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


# ---- parity with audio-separator 0.17.2 ------------------------------------------------------------
def test_vocals_match_audio_separator_wav_sample_for_sample(separated):
    vocals, rate = separated
    reference, reference_rate = load_audio(FIXTURE / "vocals_44k.wav")
    assert rate == reference_rate == 44100
    assert vocals.dtype == torch.float32 and vocals.shape == reference.shape == (2, 202860)
    ours = vocals_lib.to_pcm16_like_audio_separator(vocals.numpy()).astype(np.int32)
    theirs = np.round(reference.numpy() * 32768).astype(np.int32)
    differing = np.count_nonzero(ours != theirs)
    # Measured: identical (0 of 405,720 samples). Another onnxruntime build may move a sample
    # across a rounding boundary: allow one step in one sample per thousand.
    assert np.abs(ours - theirs).max() <= 1 and differing <= ours.size // 1000


@pytest.mark.parametrize("stretch", ["start", "seam"])
def test_vocals_match_audio_separator_floats(separated, stretch):
    """Before 16-bit quantization: the start, and the stretch where two model chunks overlap."""
    vocals, _ = separated
    with np.load(FIXTURE / "vocals_float.npz", allow_pickle=False) as data:
        offset, expected = int(data[f"{stretch}_offset"]), data[stretch]
    ours = vocals.numpy()[:, offset:offset + expected.shape[1]]
    assert ours.shape == expected.shape
    # measured: 0.0 (bit-identical)
    assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()


def test_vocals_at_16k_match_what_hallo_loads(separated):
    vocals, rate = separated
    hallo, hallo_rate = load_audio(FIXTURE / "vocals_16k.wav")
    hallo_mono = hallo.mean(dim=0)  # librosa.load(sr=16000): int16 / 32768, channels averaged
    ours = vocals_lib.vocals_as_hallo_reads_them(vocals, rate)
    assert hallo_rate == 16000 and ours.shape == hallo_mono.shape == (73600,)
    # Hallo's ffmpeg 5.1 and PyAV's libswresample differ by up to 2.5 steps of 16 bits
    # (measured: 7.6e-5 at most, 1.05e-4 relative RMS).
    assert (ours - hallo_mono).abs().max() <= 3 / 32768
    assert relative(ours, hallo_mono) < 3e-4


def test_opencv_runs_the_tiny_model_like_onnxruntime(song, separated):
    pytest.importorskip("cv2")
    waveform, rate = song
    vocals, _ = separate_vocals(waveform[:, :48000], rate, TINY_MODEL, spec=KIM_VOCAL_2, engine="opencv")
    reference, _ = separate_vocals(waveform[:, :48000], rate, TINY_MODEL, spec=KIM_VOCAL_2, engine="onnxruntime")
    assert (vocals - reference).abs().max() <= 1e-5 * reference.abs().max()


# ---- behaviour -----------------------------------------------------------------------------------
def test_deterministic_and_the_input_matters(song):
    waveform, rate = song
    clip = waveform[:, :24000]
    first, _ = separate_vocals(clip, rate, TINY_MODEL, spec=KIM_VOCAL_2)
    second, _ = separate_vocals(clip, rate, TINY_MODEL, spec=KIM_VOCAL_2)
    assert torch.equal(first, second)
    other, _ = separate_vocals(waveform[:, 24000:48000], rate, TINY_MODEL, spec=KIM_VOCAL_2)
    assert not torch.allclose(first, other)


def test_band_model_keeps_the_band_and_removes_the_rest(band_model):
    """A model that zeroes every bin outside 1-3 kHz: what comes out is the 2 kHz tone, per
    channel, times Kim_Vocal_2's compensate 1.009; the 300 Hz and 6 kHz tones are gone."""
    in_band = {1995.0: 0.3}
    left = tones(3.0, {**in_band, 300.0: 0.3, 6000.0: 0.2})
    right = tones(3.0, {1995.0: 0.15, 300.0: 0.1, 6000.0: 0.3})
    vocals, rate = separate_vocals(torch.tensor(np.stack([left, right]), dtype=torch.float32), 44100, band_model,
                                   spec=KIM_VOCAL_2)
    assert rate == 44100 and vocals.shape == (2, left.size)
    inner = slice(4410, -4410)  # away from the clip's own start and end
    expected_left = tones(3.0, in_band) * KIM_VOCAL_2.compensate
    expected_right = tones(3.0, {1995.0: 0.15}) * KIM_VOCAL_2.compensate
    assert relative(vocals[0, inner], expected_left[inner]) < 1e-3
    assert relative(vocals[1, inner], expected_right[inner]) < 1e-3
    # the tones outside the band are attenuated by more than 60 dB
    spectrum = np.abs(np.fft.rfft(vocals[0, inner].numpy() * np.hanning(vocals[0, inner].shape[0])))
    freqs = np.fft.rfftfreq(vocals[0, inner].shape[0], 1 / 44100)
    peak = spectrum[np.argmin(np.abs(freqs - 1995))]
    for hz in (300.0, 6000.0):
        assert spectrum[np.argmin(np.abs(freqs - hz))] < peak * 1e-3


def test_identity_model_loses_only_the_lowest_and_highest_bins(tmp_path):
    """The model sees bins 3 .. dim_f - 1 (17 Hz .. 17.6 kHz): a 440 Hz tone passes, 19 kHz does not."""
    model = identity_model(tmp_path / "identity.onnx", ["batch", 4, KIM_VOCAL_2.dim_f, KIM_VOCAL_2.dim_t])
    clip = tones(2.0, {440.0: 0.4, 19000.0: 0.3})
    vocals, _ = separate_vocals(torch.tensor(clip[None], dtype=torch.float32), 44100, model, spec=KIM_VOCAL_2)
    expected = tones(2.0, {440.0: 0.4}) * KIM_VOCAL_2.compensate
    assert relative(vocals[0, 4410:-4410], expected[4410:-4410]) < 1e-3
    assert torch.equal(vocals[0], vocals[1])  # mono goes to both sides


def test_mono_stereo_channels_and_rates(band_model, caplog):
    mono = torch.tensor(tones(1.0, {1995.0: 0.3, 6000.0: 0.2}, rate=22050)[None], dtype=torch.float32)
    from_mono, rate = separate_vocals(mono, 22050, band_model, spec=KIM_VOCAL_2)
    from_stereo, _ = separate_vocals(mono.expand(2, -1), 22050, band_model, spec=KIM_VOCAL_2)
    from_1d, _ = separate_vocals(mono[0], 22050, band_model, spec=KIM_VOCAL_2)
    assert rate == 44100 and from_mono.shape == (2, 44100)  # ceil(22050 * 44100 / 22050)
    assert torch.equal(from_mono, from_stereo) and torch.equal(from_mono, from_1d)
    # other rates: resampled to 44.1 kHz as librosa.load(sr=44100) does (soxr HQ, ceil length)
    librosa = pytest.importorskip("librosa")
    at_44k = librosa.resample(mono.numpy(), orig_sr=22050, target_sr=44100, res_type="soxr_hq")
    np.testing.assert_allclose(vocals_lib.prepare_mix(mono, 22050), np.repeat(at_44k, 2, axis=0), atol=1e-7)
    odd = torch.tensor(tones(1.0, {1995.0: 0.3}, rate=32000)[None], dtype=torch.float32)
    assert separate_vocals(odd, 32000, band_model, spec=KIM_VOCAL_2)[0].shape == (2, 44100)
    # more than two channels: mixed down to mono first
    surround = torch.cat([mono, mono * 0.5, mono * 0.25])
    with caplog.at_level(logging.INFO, logger="emo.vocals"):
        from_three, _ = separate_vocals(surround, 22050, band_model, spec=KIM_VOCAL_2)
    assert "3 channels mixed down to mono" in caplog.text
    np.testing.assert_allclose(from_three, from_mono * (1.75 / 3), atol=1e-6)


def test_loud_input_and_output_are_scaled_to_the_peak(band_model):
    loud = torch.tensor(tones(1.0, {1995.0: 1.6})[None], dtype=torch.float32)
    vocals, _ = separate_vocals(loud, 44100, band_model, spec=KIM_VOCAL_2)
    assert vocals.abs().max() <= 0.9 and vocals.abs().max() > 0.899
    quiet, _ = separate_vocals(loud * 0.25, 44100, band_model, spec=KIM_VOCAL_2)
    assert 0.40 < quiet[:, 4410:-4410].abs().max() < 0.41  # 0.4 x 1.009 (the clip's ends ring higher)


def test_long_input_is_seamless_and_memory_stays_bounded(band_model):
    """60 s: 15 chunks. Around each chunk seam the output equals a run on a 4 s excerpt that holds
    the seam in the middle of one chunk; memory beyond the output stays a few chunks' worth."""
    rng = np.random.default_rng(0)
    seconds = 60.0
    n = int(seconds * 44100)
    t = np.arange(n) / 44100
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 3.7 * t)
    clip = np.stack([0.3 * syllables * np.sin(2 * np.pi * (1800 + 300 * np.sin(2 * np.pi * 0.2 * t)) * t),
                     0.2 * rng.standard_normal(n) * 0.5]).astype(np.float32)
    waveform = torch.from_numpy(clip)
    calls = []
    tracemalloc.start()
    vocals, _ = separate_vocals(waveform, 44100, band_model, spec=KIM_VOCAL_2,
                                progress=lambda done, total: calls.append((done, total)))
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [done for done, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][1] == len(calls) == 15
    # NumPy memory (tracemalloc sees NumPy, not torch's chunk-sized STFTs): the 21 MB output and
    # about 15 MB of chunk buffers (measured 35.8 MB). One more copy of the signal (audio-separator
    # keeps the padded mixture, the sums and the weights, each this size) would exceed the bound.
    signal_bytes = clip.nbytes
    assert peak_bytes < signal_bytes + 25e6, peak_bytes
    trim = KIM_VOCAL_2.trim
    for seam in (STEP - trim, 5 * STEP - trim, 12 * STEP - trim):  # where chunk k+1 starts
        middle = seam + (CHUNK - STEP) // 2
        start = middle - 2 * 44100
        excerpt, _ = separate_vocals(waveform[:, start:start + 4 * 44100], 44100, band_model, spec=KIM_VOCAL_2)
        inner = slice(44100, 3 * 44100)  # 1 s around the overlap, far from the excerpt's own ends
        long_part = vocals[:, start:start + 4 * 44100][:, inner]
        assert (long_part - excerpt[:, inner]).abs().max() < 1e-4 * long_part.abs().max()


def test_progress_and_cancel(song):
    waveform, rate = song
    calls = []
    separate_vocals(waveform, rate, TINY_MODEL, spec=KIM_VOCAL_2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    polls = []

    def cancel_after_first():
        polls.append(1)
        return len(polls) > 1

    with pytest.raises(SeparationCancelled, match="cancelled at chunk 2/2"):
        separate_vocals(waveform, rate, TINY_MODEL, spec=KIM_VOCAL_2, should_cancel=cancel_after_first)


# ---- model files -----------------------------------------------------------------------------------
def test_model_hash_is_uvrs(tmp_path):
    small = tmp_path / "small.onnx"
    small.write_bytes(b"abc" * 1000)
    assert vocals_lib.model_tail_md5(small) == hashlib.md5(small.read_bytes()).hexdigest()
    big = tmp_path / "big.onnx"
    data = np.random.default_rng(0).bytes(10000 * 1024 + 4096)
    big.write_bytes(data)
    assert vocals_lib.model_tail_md5(big) == hashlib.md5(data[-10000 * 1024:]).hexdigest()


def test_model_known_by_name_when_the_hash_differs(tmp_path, caplog):
    renamed = shutil.copy(TINY_MODEL, tmp_path / "Kim_Vocal_2.onnx")
    with caplog.at_level(logging.WARNING, logger="emo.vocals"):
        assert vocals_lib.identify_model(renamed) is KIM_VOCAL_2
    assert "not the released Kim_Vocal_2.onnx's 970b3f9492014d18fefeedfe4773cb42" in caplog.text


def test_unknown_model_lists_what_is_supported(tmp_path):
    unknown = shutil.copy(TINY_MODEL, tmp_path / "UVR-MDX-NET-Inst_HQ_3.onnx")
    with pytest.raises(ValueError, match=r"not a vocal separation model this pack knows; supported: "
                                         r"Kim_Vocal_2\.onnx \(UVR hash 970b3f9492014d18fefeedfe4773cb42\)"):
        separate_vocals(torch.zeros(2, 100), 44100, unknown)


def test_missing_model_says_where_kim_vocal_2_goes(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no vocal separation model at .*missing\.onnx; Kim_Vocal_2\.onnx is "
                                                r"in pretrained_models/audio_separator/ of a Hallo download.*"
                                                r"models/audio_separator/"):
        separate_vocals(torch.zeros(2, 100), 44100, tmp_path / "missing.onnx")


def test_damaged_model_file(tmp_path):
    damaged = tmp_path / "Kim_Vocal_2.onnx"
    damaged.write_bytes(TINY_MODEL.read_bytes()[:1000])  # an interrupted download
    with pytest.raises(ValueError, match="onnxruntime cannot load .*Kim_Vocal_2.onnx .*download it again"):
        separate_vocals(torch.zeros(2, 100), 44100, damaged)


def test_model_with_other_shapes_is_refused(tmp_path):
    model = identity_model(tmp_path / "Kim_Vocal_2.onnx", ["batch", 4, 2048, 256])
    with pytest.raises(ValueError, match=r"takes input \['batch', 4, 2048, 256\], but Kim_Vocal_2\.onnx needs "
                                         r"\[batch, 4, 3072, 256\]"):
        separate_vocals(torch.zeros(2, 100), 44100, model)


def test_bad_audio_and_settings(band_model):
    with pytest.raises(ValueError, match="the audio is empty"):
        separate_vocals(torch.zeros(2, 0), 44100, band_model, spec=KIM_VOCAL_2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        separate_vocals(torch.full((2, 10), math.nan), 44100, band_model, spec=KIM_VOCAL_2)
    with pytest.raises(ValueError, match="sample_rate must be a positive whole number of Hz, got 0"):
        separate_vocals(torch.zeros(2, 10), 0, band_model, spec=KIM_VOCAL_2)
    with pytest.raises(ValueError, match=r"expected a waveform \[channels, samples\], got shape \(1, 2, 10\)"):
        separate_vocals(torch.zeros(1, 2, 10), 44100, band_model, spec=KIM_VOCAL_2)
    with pytest.raises(ValueError, match="engine must be 'auto', 'onnxruntime' or 'opencv', got 'tensorrt'"):
        separate_vocals(torch.zeros(2, 10), 44100, band_model, spec=KIM_VOCAL_2, engine="tensorrt")
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\), got 1.0"):
        vocals_lib.SeparationSettings(overlap=1.0)


def test_without_onnxruntime_opencv_runs_it_and_without_both_the_error_says_what_to_install(monkeypatch, song,
                                                                                             tmp_path):
    pytest.importorskip("cv2")
    waveform, rate = song
    # a graph OpenCV cannot read (Hardmax; onnxruntime runs it)
    hardmax = single_op_model(tmp_path / "hardmax.onnx", "Hardmax", ["batch", 4, KIM_VOCAL_2.dim_f, KIM_VOCAL_2.dim_t])
    with pytest.raises(ImportError, match=r"OpenCV's DNN module cannot run hardmax\.onnx .*pip install onnxruntime"):
        vocals_lib.VocalSeparator(hardmax, spec=KIM_VOCAL_2, engine="opencv")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    separator = vocals_lib.VocalSeparator(TINY_MODEL, spec=KIM_VOCAL_2)
    assert separator.engine == "opencv"
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install onnxruntime \(or onnxruntime-gpu for CUDA\)"):
        separate_vocals(waveform[:, :100], rate, TINY_MODEL, spec=KIM_VOCAL_2)
    with pytest.raises(ImportError, match="onnxruntime is not installed.*pip install onnxruntime"):
        separate_vocals(waveform[:, :100], rate, TINY_MODEL, spec=KIM_VOCAL_2, engine="onnxruntime")


def test_overlap_zero_sums_chunks_unweighted(band_model):
    """overlap 0 (not Hallo's) still covers every sample once."""
    clip = torch.tensor(tones(7.0, {1995.0: 0.3})[None], dtype=torch.float32)
    settings = vocals_lib.SeparationSettings(overlap=0.0)
    vocals, _ = separate_vocals(clip, 44100, band_model, spec=KIM_VOCAL_2, settings=settings)
    expected = tones(7.0, {1995.0: 0.3}) * KIM_VOCAL_2.compensate
    assert relative(vocals[0, 4410:-4410], expected[4410:-4410]) < 1e-2
