"""AudioEncode: AUDIO -> per-frame wav2vec2 tokens (EMO_AUDIO), the frame count and the AUDIO used."""

from __future__ import annotations

import logging

import torch

from ..emo.audio import AudioFeatures

from . import comfy_services as services
from .model import EMOModelHandle

logger = logging.getLogger(__name__)


def audio_waveform(audio, node: str) -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO {"waveform": [B, C, T], "sample_rate": int} -> ([C, T] of item 0, rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(
            f"{node}: expected an AUDIO input (a dict with 'waveform' [B, C, T] and 'sample_rate'), "
            f"got {type(audio).__name__}; connect LoadAudio or another AUDIO output"
        )
    waveform = torch.as_tensor(audio["waveform"])
    if waveform.dim() == 2:  # some nodes drop the batch dimension
        waveform = waveform[None]
    if waveform.dim() != 3:
        raise ValueError(f"{node}: the AUDIO waveform must be [B, C, T], got {tuple(waveform.shape)}")
    if waveform.shape[0] == 0 or waveform.shape[-1] == 0:
        raise ValueError(f"{node}: the AUDIO is empty (waveform {tuple(waveform.shape)}); connect a clip with sound")
    if waveform.shape[0] > 1:
        logger.info("%s: the AUDIO holds a batch of %d clips, using the first", node, waveform.shape[0])
    return waveform[0], int(audio["sample_rate"])


def readout(num_frames: int, fps: float, seconds: float, clips: int | None = None) -> dict:
    """The numbers web/emo.js shows on AudioEncode and EMOSampler."""
    data = {"frames": int(num_frames), "fps": float(fps), "seconds": round(float(seconds), 3)}
    if clips is not None:
        data["clips"] = int(clips)
    return data


def encode(model: EMOModelHandle, audio, fps: float, start_seconds: float = 0.0,
           duration_seconds: float = 0.0) -> tuple[AudioFeatures, int, dict]:
    """The node's body: (features, frame count, AUDIO actually used)."""
    node = "EMO Audio Encode"
    if not isinstance(model, EMOModelHandle):
        raise ValueError(f"{node}: the model input must come from EMO Load Checkpoint (or another EMO loader), got {type(model).__name__}")
    waveform, sample_rate = audio_waveform(audio, node)
    length = waveform.shape[-1] / sample_rate
    if start_seconds >= length:
        raise ValueError(
            f"{node}: start_seconds={start_seconds:g} is at or past the end of the {length:.2f} s audio; "
            f"give a start below {length:.2f}"
        )
    duration = None if duration_seconds <= 0 else duration_seconds
    fps = fps if fps > 0 else model.defaults.fps  # 0: the checkpoint's own frame rate
    progress = services.Progress(1)

    def on_chunk(done: int, total: int) -> None:
        progress.update_absolute(done, total)
        services.check_interrupted()

    with model.loaded() as pipeline:
        try:
            features = pipeline.encode_audio(waveform, sample_rate, fps, start_seconds=start_seconds,
                                             duration_seconds=duration, progress=on_chunk)
        except ValueError as error:
            raise ValueError(f"{node}: {error}") from error
    used = {"waveform": features.waveform[None], "sample_rate": features.sample_rate}
    logger.info("%s: %.2f s at %d Hz -> %d frames at %g fps", node, features.duration_seconds(),
                sample_rate, features.num_frames, fps)
    return features, features.num_frames, used


class EMOAudioEncode:
    DESCRIPTION = (
        "Turns a voice track into EMO's per-frame audio tokens (wav2vec2 features of each video "
        "frame and its neighbours). Any AUDIO works: LoadAudio, TTS nodes. Outputs the frame "
        "count the video will have and the audio actually used (trimmed, original sample rate) "
        "so the sound stays in sync in EMO Video Combine."
    )
    CATEGORY = "EMO/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("EMO_AUDIO", "INT", "AUDIO")
    RETURN_NAMES = ("audio_features", "frame_count", "audio")
    OUTPUT_TOOLTIPS = (
        "Per-frame audio tokens for EMO Sampler.",
        "Number of video frames: ceil(duration x fps).",
        "The part of the audio that was encoded; connect it to EMO Video Combine so sound and lips match.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {
                    "tooltip": "The voice (speech or singing), any sample rate, mono or stereo. For a batch, "
                               "the first clip is used.",
                }),
                "model": ("EMO_MODEL", {"tooltip": "From EMO Load Checkpoint (or another EMO loader); its audio "
                                                    "encoder (wav2vec2; whisper-tiny for EchoMimic) encodes the audio."}),
                "fps": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 120.0, "step": 0.01,
                    "tooltip": "Frame rate of the video to generate; 0 = the checkpoint's own (25 for EMO and "
                               "Hallo, 24 for EchoMimic). The sampler and EMO Video Combine use the same rate.",
                }),
            },
            "optional": {
                "start_seconds": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                    "tooltip": "Skip this much audio at the start.",
                }),
                "duration_seconds": ("FLOAT", {
                    "default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                    "tooltip": "Use this much audio from the start point; 0 = to the end.",
                }),
            },
        }

    def encode(self, audio, model, fps=0.0, start_seconds=0.0, duration_seconds=0.0):
        features, frame_count, used = encode(model, audio, fps, start_seconds, duration_seconds)
        ui = {"emo_readout": [readout(frame_count, features.fps, features.duration_seconds())]}
        return {"ui": ui, "result": (features, frame_count, used)}
