"""Tests for emo.audio: decoding, waveform helpers, and wav2vec2 features aligned to video frames.

Everything runs on the CPU with a tiny random wav2vec2 (hidden size 32, 2 layers) and audio files
written here with PyAV, so no downloads are needed.
"""

import copy
import logging
import math
import wave
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from emo import audio
from emo.audio import (
    TARGET_SAMPLE_RATE,
    AudioFeatures,
    align_to_video_frames,
    encode_audio,
    extract_wav2vec2_features,
    frame_count,
    load_audio,
    resample,
    to_mono,
    trim,
    wav2vec2_geometry,
    wav2vec2_hidden_states,
    window,
)

LAYERS, HIDDEN = 2, 32


def tiny_wav2vec2_config(**overrides) -> Wav2Vec2Config:
    # Real wav2vec2 frame geometry (hop 320, receptive field 400 samples) with tiny widths.
    kwargs = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    kwargs.update(overrides)
    return Wav2Vec2Config(**kwargs)


@pytest.fixture(scope="module")
def model() -> Wav2Vec2Model:
    torch.manual_seed(0)
    # Default feat_extract_norm="group", like wav2vec2-base which EMO-style models use.
    return Wav2Vec2Model(tiny_wav2vec2_config()).eval()


def speech_like(seconds: float, seed: int, sample_rate: int = TARGET_SAMPLE_RATE) -> torch.Tensor:
    """Noise with a slowly varying envelope (syllable-like bursts), float32 [T]."""
    generator = torch.Generator().manual_seed(seed)
    length = int(round(seconds * sample_rate))
    envelope = torch.sin(torch.linspace(0, 7 * seconds, length)).abs()
    return 0.3 * torch.randn(length, generator=generator) * envelope


# --------------------------------------------------------------------------------------------------
# load_audio
# --------------------------------------------------------------------------------------------------


def tones(sample_rate: int, channels: int, seconds: float) -> np.ndarray:
    """float32 [C, T]: channel c is a 440 * (c + 1) Hz sine at half scale (so channel order is visible)."""
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def write_audio(path, container_format: str, codec: str, sample_rate: int, channels: int, seconds: float = 0.5):
    data = tones(sample_rate, channels, seconds)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=stream.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = 0  # lets the muxer record the encoder delay, so decoders can drop it again
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return data


def write_video(path, *, with_audio: bool, sample_rate: int = 44100, seconds: float = 0.5):
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=24)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("aac", rate=sample_rate, layout="stereo") if with_audio else None
        for index in range(int(24 * seconds)):
            image = np.full((32, 32, 3), index * 10, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(tones(sample_rate, 2, seconds), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = sample_rate, 0
            for packet in sound.encode(frame):
                container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


def dominant_frequency(signal: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * sample_rate / len(signal))


# (suffix, container format, codec, sample rate, channels, encoder frame size or 0 for lossless)
AUDIO_FILES = [
    ("wav", "wav", "pcm_s16le", 22050, 1, 0),
    ("wav", "wav", "pcm_s16le", 48000, 2, 0),
    ("flac", "flac", "flac", 44100, 2, 0),
    ("mp3", "mp3", "libmp3lame", 44100, 2, 1152),
    ("mp3", "mp3", "libmp3lame", 22050, 1, 1152),
    ("ogg", "ogg", "libopus", 48000, 1, 960),
    ("m4a", "ipod", "aac", 44100, 2, 1024),
    ("m4a", "ipod", "aac", 48000, 1, 1024),
]


@pytest.mark.parametrize(
    "suffix, container_format, codec, sample_rate, channels, encoder_frame",
    AUDIO_FILES,
    ids=[f"{a[0]}-{a[3]}-{a[4]}ch" for a in AUDIO_FILES],
)
def test_load_audio_formats(tmp_path, suffix, container_format, codec, sample_rate, channels, encoder_frame):
    path = tmp_path / f"clip.{suffix}"
    written = write_audio(path, container_format, codec, sample_rate, channels)

    waveform, rate = load_audio(path)

    assert rate == sample_rate
    assert waveform.dtype == torch.float32
    assert waveform.shape[0] == channels
    # Lossy codecs may add up to one frame of padding; lossless ones must be exact.
    assert abs(waveform.shape[1] - written.shape[1]) <= encoder_frame
    assert waveform.abs().max() < 1.05
    for channel in range(channels):
        expected = 440 * (channel + 1)
        found = dominant_frequency(waveform[channel].numpy(), rate)
        assert abs(found - expected) <= 2 * rate / waveform.shape[1], (channel, found)
    if encoder_frame == 0:
        # 16-bit PCM: exact up to quantisation, so scaling and de-interleaving are right.
        np.testing.assert_allclose(waveform.numpy(), written, atol=1.5 / 32768)


def test_load_audio_reads_the_sound_track_of_a_video(tmp_path):
    path = tmp_path / "talk.mp4"
    write_video(path, with_audio=True, sample_rate=44100)

    waveform, rate = load_audio(path)

    assert rate == 44100 and waveform.shape[0] == 2
    assert abs(waveform.shape[1] - 22050) <= 1024
    assert abs(dominant_frequency(waveform[1].numpy(), rate) - 880) <= 4


def test_load_audio_video_without_sound_says_so(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, with_audio=False)
    with pytest.raises(ValueError, match=r"load_audio: .*has no audio stream \(found: video\)"):
        load_audio(path)


def test_load_audio_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_audio: audio file .*nope.wav.* does not exist"):
        load_audio(tmp_path / "nope.wav")


def test_load_audio_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="load_audio: .*empty"):
        load_audio(path)


def test_load_audio_wav_without_samples(tmp_path):
    path = tmp_path / "no_samples.wav"
    with wave.open(str(path), "wb") as handle:  # a valid header announcing 0 frames
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
    with pytest.raises(ValueError, match=r"load_audio: the audio in .* is empty \(0 samples"):
        load_audio(path)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4000), b"this is not audio at all\n" * 20])
def test_load_audio_garbage(tmp_path, content):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="could not be decoded as audio: .*; give a wav/mp3/flac/ogg/m4a file"):
        load_audio(path)


def test_load_audio_folder(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        load_audio(tmp_path)


# --------------------------------------------------------------------------------------------------
# Waveform helpers
# --------------------------------------------------------------------------------------------------


def test_to_mono_shapes_and_values():
    stereo = torch.stack([torch.ones(10), 3 * torch.ones(10)])  # [2, 10]
    assert torch.equal(to_mono(torch.arange(5.0)), torch.arange(5.0))
    assert torch.equal(to_mono(stereo), 2 * torch.ones(10))
    batch = torch.stack([stereo, 100 * stereo])  # ComfyUI [B, C, T]: item 0 is used
    assert torch.equal(to_mono(batch), 2 * torch.ones(10))
    assert to_mono(torch.ones(1, 7, dtype=torch.int16)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"to_mono: waveform has shape \(1, 1, 2, 5\)"):
        to_mono(torch.zeros(1, 1, 2, 5))


def test_resample_length_dtype_and_identity():
    waveform = torch.randn(2, 44100, generator=torch.Generator().manual_seed(0))
    out = resample(waveform, 44100, 16000)
    assert out.shape == (2, 16000) and out.dtype == torch.float32
    # Channels are resampled independently, leading dimensions kept.
    torch.testing.assert_close(out[1], resample(waveform[1], 44100, 16000))
    assert resample(waveform.reshape(1, 2, 44100), 44100, 16000).shape == (1, 2, 16000)
    odd = resample(torch.zeros(1001), 22050, 16000)
    assert odd.shape == (math.ceil(1001 * 16000 / 22050),)
    same = resample(waveform.double(), 16000, 16000)
    assert same.dtype == torch.float32 and torch.equal(same, waveform)
    with pytest.raises(ValueError, match="resample: orig_sr must be a positive number of Hz, got 0"):
        resample(waveform, 0, 16000)


@pytest.mark.parametrize("orig_sr", [22050, 44100, 48000])
def test_resample_keeps_a_sine_at_its_frequency(orig_sr):
    t = torch.arange(orig_sr) / orig_sr  # 1 s
    sine = torch.sin(2 * math.pi * 1000 * t)
    out = resample(sine, orig_sr, 16000).numpy()
    assert dominant_frequency(out, 16000) == pytest.approx(1000, abs=1)
    # Amplitude is preserved away from the edges.
    assert np.abs(out[1000:-1000]).max() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    "num_samples, sample_rate, fps, expected",
    [
        (int(2.3 * 16000), 16000, 25, 58),  # 57.5 -> 58
        (2 * 16000, 16000, 25, 50),  # exact multiple: no extra frame
        (2 * 44100, 44100, 25.0, 50),
        (1, 16000, 25, 1),  # any sound needs a frame
        (0, 16000, 25, 0),
        (10 * 48000, 48000, 29.97, 300),  # 299.7 -> 300
        (100 * 48000, 48000, 29.97, 2997),  # exactly 2997 frames at 2997/100 fps
        (10 * 16000, 16000, 24.3, 243),  # the double nearest 24.3 is a bit above it: still 243
        (1001 * 48000 // 30, 48000, 30000 / 1001, 1000),  # NTSC: exactly 1000 frames
        (3 * 16000, 16000, 1 / 3, 1),
    ],
)
def test_frame_count(num_samples, sample_rate, fps, expected):
    assert frame_count(num_samples, sample_rate, fps) == expected


@pytest.mark.parametrize("fps", [0, -25, float("nan"), float("inf")])
def test_frame_count_rejects_bad_fps(fps):
    with pytest.raises(ValueError, match="frame_count: fps must be"):
        frame_count(16000, 16000, fps)


def test_trim_cuts_the_requested_span():
    waveform = torch.arange(2 * 1000.0).reshape(2, 1000)  # 1 s at 1 kHz
    cut = trim(waveform, 1000, start_seconds=0.25, duration_seconds=0.5)
    assert torch.equal(cut, waveform[:, 250:750])
    assert torch.equal(trim(waveform, 1000, 0.9), waveform[:, 900:])
    assert torch.equal(trim(waveform, 1000, 0.5, 10.0), waveform[:, 500:])  # runs past the end: shortened
    assert trim(waveform, 1000, 0.0, 1e-9).shape == (2, 1)  # a positive duration keeps at least a sample


@pytest.mark.parametrize(
    "start, duration, message",
    [
        (-0.1, None, "trim: start_seconds must be >= 0, got -0.1"),
        (1.0, None, "trim: start_seconds=1.0 is at or beyond the end of the audio"),
        (5.0, 1.0, "trim: start_seconds=5.0 is at or beyond the end"),
        (0.0, 0.0, "trim: duration_seconds must be > 0, got 0.0"),
        (0.0, -1.0, "trim: duration_seconds must be > 0, got -1.0"),
    ],
)
def test_trim_errors(start, duration, message):
    with pytest.raises(ValueError, match=message):
        trim(torch.zeros(2, 1000), 1000, start, duration)


def test_window_clamps_at_both_ends():
    features = torch.arange(5.0).reshape(5, 1, 1).expand(5, 2, 3)  # frame f holds the value f
    out = window(features, [0, 2, 4, 6], radius=2)
    assert out.shape == (4, 5, 2, 3)
    assert out[:, :, 0, 0].tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 3, 4],
        [2, 3, 4, 4, 4],
        [4, 4, 4, 4, 4],  # past the end (padding of a last partial clip): clamped
    ]
    assert torch.equal(window(features, range(1, 3), 0), features[1:3, None])
    assert torch.equal(window(features, torch.tensor([3]), 1)[0, :, 0, 0], torch.tensor([2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="window: radius must be an integer >= 0, got -1"):
        window(features, [0], -1)


# --------------------------------------------------------------------------------------------------
# wav2vec2 features
# --------------------------------------------------------------------------------------------------


def test_geometry_of_wav2vec2():
    assert wav2vec2_geometry(tiny_wav2vec2_config()) == (320, 400)


def test_features_shape_dtype_and_layers(model):
    waveform = speech_like(2.3, seed=1)
    num_frames = frame_count(waveform.shape[0], TARGET_SAMPLE_RATE, 25)
    features = extract_wav2vec2_features(model, waveform, num_frames, fps=25)
    assert features.shape == (58, LAYERS, HIDDEN)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert not features.is_inference()  # usable by training code outside inference mode
    assert torch.isfinite(features).all()
    # Layers are the transformer outputs (hidden_states[1:]), not the CNN projection.
    hidden = wav2vec2_hidden_states(model, waveform)
    assert hidden.shape == ((waveform.shape[0] - 400) // 320 + 1, LAYERS, HIDDEN)
    normalized = Wav2Vec2FeatureExtractor(do_normalize=True)(waveform.numpy(), sampling_rate=16000)
    with torch.no_grad():
        reference = model(torch.tensor(normalized["input_values"][0])[None], output_hidden_states=True)
    expected = torch.stack(reference.hidden_states[1:], dim=2)[0]  # [N, L, D]
    torch.testing.assert_close(hidden, expected, atol=1e-4, rtol=1e-4)


def test_short_clip_is_a_single_exact_chunk(model):
    waveform = speech_like(1.0, seed=2)
    whole = wav2vec2_hidden_states(model, waveform, chunk_seconds=20.0)
    one_chunk = wav2vec2_hidden_states(model, waveform, chunk_seconds=1.0)  # 49 frames <= 50 per chunk
    assert torch.equal(whole, one_chunk)
    assert torch.equal(
        extract_wav2vec2_features(model, waveform, 25, fps=25),
        extract_wav2vec2_features(model, waveform, 25, fps=25, chunk_seconds=1.0),
    )


class LocalModel(torch.nn.Module):
    """wav2vec2's frame geometry without attention: a frame depends only on its own 400 samples,
    so chunking must reproduce one long run exactly (this checks the chunk bookkeeping)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
        self.frames = torch.nn.Conv1d(1, 4, kernel_size=400, stride=320)

    def forward(self, input_values, output_hidden_states=False):
        h = self.frames(input_values[:, None]).transpose(1, 2)  # [B, N, 4]
        return SimpleNamespace(hidden_states=(torch.zeros_like(h), h, torch.tanh(h)))


@pytest.mark.parametrize("chunk_seconds, context_seconds", [(0.3, 0.0), (0.5, 0.25), (1.0, 1.0), (0.02, 0.0)])
def test_chunks_line_up_with_the_frame_grid(chunk_seconds, context_seconds):
    torch.manual_seed(0)
    local = LocalModel().eval()
    waveform = speech_like(3.01, seed=3)
    whole = wav2vec2_hidden_states(local, waveform, chunk_seconds=100)
    chunked = wav2vec2_hidden_states(
        local, waveform, chunk_seconds=chunk_seconds, context_seconds=context_seconds
    )
    assert chunked.shape == whole.shape == ((waveform.shape[0] - 400) // 320 + 1, 2, 4)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_long_audio_is_chunked_with_bounded_inputs_and_stays_close(model):
    waveform = speech_like(6.0, seed=4)
    whole = wav2vec2_hidden_states(model, waveform, chunk_seconds=100)

    lengths, calls = [], []
    handle = model.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[-1]))
    try:
        chunked = wav2vec2_hidden_states(
            model, waveform, chunk_seconds=2.0, context_seconds=1.0, progress=lambda *a: calls.append(a)
        )
    finally:
        handle.remove()

    assert chunked.shape == whole.shape
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(lengths) == 3 and max(lengths) <= (2.0 + 2 * 1.0) * 16000 + 400
    # Only attention beyond the 1 s context differs: measured 6e-4 relative error (1e-2 allowed).
    relative = (chunked - whole).norm() / whole.norm()
    assert relative < 1e-2, relative.item()
    # The group-norm statistics hook must not outlive the call.
    assert not model.feature_extractor.conv_layers[0].layer_norm._forward_hooks


def test_chunking_uses_whole_clip_group_norm_statistics(model):
    # Without the whole-clip statistics each chunk renormalises itself; the error is then ~4%.
    waveform = speech_like(6.0, seed=4) * torch.linspace(0.2, 2.0, 96000)  # loudness changes a lot
    whole = wav2vec2_hidden_states(model, waveform, chunk_seconds=100)
    chunked = wav2vec2_hidden_states(model, waveform, chunk_seconds=2.0, context_seconds=1.0)
    assert (chunked - whole).norm() / whole.norm() < 1e-2


def test_alignment_to_video_frame_centres():
    # With frame j holding the value j, interpolation returns the fractional wav2vec2 position of
    # each video frame centre: ((i + 0.5) / fps * 16000 - 200) / 320.
    frames = torch.arange(20.0).reshape(20, 1, 1)
    out = align_to_video_frames(frames, 12, 25)[:, 0, 0]
    expected = torch.clamp((torch.arange(12) + 0.5) / 25 * 50 - 0.625, 0, 19)
    torch.testing.assert_close(out, expected)
    # Video frame 0 is centred at 20 ms, between wav2vec2 frames 0 (12.5 ms) and 1 (32.5 ms).
    assert out[0].item() == pytest.approx(0.375)
    # Before the first and after the last wav2vec2 frame centre: clamped.
    early = align_to_video_frames(frames, 2, 1000)[:, 0, 0]
    assert early.tolist() == [0.0, 0.0]
    assert align_to_video_frames(frames, 12, 5)[-1, 0, 0].item() == 19.0


def test_fps_defaults_to_spreading_frames_over_the_clip(model):
    waveform = speech_like(2.0, seed=5)
    torch.testing.assert_close(
        extract_wav2vec2_features(model, waveform, 50),
        extract_wav2vec2_features(model, waveform, 50, fps=25),
    )


def test_very_short_audio_is_padded(model):
    features = extract_wav2vec2_features(model, speech_like(0.00625, seed=6), 1, fps=25)  # 100 samples
    assert features.shape == (1, LAYERS, HIDDEN) and torch.isfinite(features).all()
    with pytest.raises(ValueError, match="the audio is empty"):
        extract_wav2vec2_features(model, torch.zeros(0), 1)
    with pytest.raises(ValueError, match="num_frames must be an integer >= 1, got 0"):
        extract_wav2vec2_features(model, torch.zeros(1000), 0)


def test_runs_in_the_model_dtype_and_returns_float32(model):
    waveform = speech_like(1.0, seed=7)
    double_model = copy.deepcopy(model).double()
    features = extract_wav2vec2_features(double_model, waveform, 25, fps=25)
    assert features.dtype == torch.float32
    expected = extract_wav2vec2_features(model, waveform, 25, fps=25)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_model_in_training_mode_is_warned_about(model, caplog):
    training = copy.deepcopy(model).train()
    with caplog.at_level(logging.WARNING, logger="emo.audio"):
        wav2vec2_hidden_states(training, speech_like(1.0, seed=8))  # long enough for SpecAugment masks
    assert "training mode" in caplog.text
    assert training.training  # the model is not switched behind the caller's back


def test_different_audio_gives_different_features(model):
    a = extract_wav2vec2_features(model, speech_like(1.0, seed=9), 25, fps=25)
    b = extract_wav2vec2_features(model, speech_like(1.0, seed=10), 25, fps=25)
    silence = extract_wav2vec2_features(model, torch.zeros(16000), 25, fps=25)
    assert (a - b).norm() / a.norm() > 0.1
    assert (a - silence).norm() / a.norm() > 0.1


def test_encode_audio_end_to_end_stereo_44k(model):
    rate = 44100
    left, right = speech_like(2.3, seed=11, sample_rate=rate), speech_like(2.3, seed=12, sample_rate=rate)
    comfy_waveform = torch.stack([left, right])[None]  # ComfyUI AUDIO: [B=1, C=2, T]
    calls = []

    result = encode_audio(
        model, comfy_waveform, rate, 25,
        start_seconds=0.5, duration_seconds=1.2, progress=lambda *a: calls.append(a),
    )

    assert isinstance(result, AudioFeatures)
    assert result.features.shape == (30, LAYERS, HIDDEN) and result.num_frames == 30  # ceil(1.2 s * 25)
    assert result.fps == 25.0 and result.sample_rate == rate
    # The kept audio is the trimmed stereo clip at its own rate, for muxing in sync.
    assert torch.equal(result.waveform, comfy_waveform[0, :, 22050 : 22050 + 52920])
    assert result.duration_seconds() == pytest.approx(1.2)
    assert calls == [(1, 1)]
    expected = extract_wav2vec2_features(
        model, resample(to_mono(result.waveform), rate, TARGET_SAMPLE_RATE), 30, fps=25
    )
    assert torch.equal(result.features, expected)


def test_encode_audio_whole_clip_frame_count(model):
    result = encode_audio(model, speech_like(2.3, seed=13, sample_rate=22050), 22050, 25)
    assert result.num_frames == 58 and result.waveform.shape == (1, round(2.3 * 22050))


@pytest.mark.parametrize("fps", [0, -1.0, float("nan")])
def test_encode_audio_rejects_bad_fps(model, fps):
    with pytest.raises(ValueError, match="encode_audio: fps must be"):
        encode_audio(model, torch.zeros(2, 1000), 16000, fps)


def test_encode_audio_rejects_empty_audio(model):
    with pytest.raises(ValueError, match=r"encode_audio: the audio is empty \(0 samples\)"):
        encode_audio(model, torch.zeros(1, 2, 0), 16000, 25)


def test_module_does_not_import_comfyui():
    source = open(audio.__file__, encoding="utf-8").read()
    for name in ("comfy", "folder_paths", "server", "nodes"):
        assert f"import {name}" not in source and f"from {name}" not in source


# --------------------------------------------------------------------------------------------------
# Memory flat in the audio's length: no whole-clip copies (issue 20)
# --------------------------------------------------------------------------------------------------


def test_chunks_are_normalised_as_the_whole_clip_is(model):
    """Chunks are normalised one by one with the whole clip's statistics: exactly what running
    the already normalised clip gives, in one call or in chunks."""
    waveform = speech_like(3.0, seed=5) * 0.3 + 0.05  # an offset and a scale to remove
    normalised = audio.normalize_waveform(waveform)
    for chunk_seconds in (100.0, 1.0):
        lazy = wav2vec2_hidden_states(model, waveform, chunk_seconds=chunk_seconds)
        eager = wav2vec2_hidden_states(model, normalised, chunk_seconds=chunk_seconds, normalize=False)
        assert torch.equal(lazy, eager)
    assert not torch.equal(wav2vec2_hidden_states(model, waveform, normalize=False),
                           wav2vec2_hidden_states(model, waveform))


def test_mono_audio_is_not_copied():
    mono = torch.randn(1, 1000)
    assert to_mono(mono).data_ptr() == mono.data_ptr()
    assert torch.equal(to_mono(mono), mono[0])


@pytest.mark.parametrize("expected", [0, 5, 1000, 100_000])
def test_sample_buffer_holds_exactly_the_decoded_samples(expected):
    """The header's length only sizes the buffer: too short (it grows), too long or unknown (0),
    the samples come back as decoded."""
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal((2, n)).astype(np.float32) for n in (1024, 1024, 700, 3)]
    buffer = audio._SampleBuffer(expected)
    for piece in pieces:
        buffer.append(piece)
    samples = buffer.samples()
    assert samples.flags.c_contiguous and buffer.length == 2751
    np.testing.assert_array_equal(samples, np.concatenate(pieces, axis=1))
