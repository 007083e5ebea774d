"""SeparateVocals: AUDIO -> the vocals alone (MDX-Net Kim_Vocal_2.onnx), as Hallo does before wav2vec2."""

from __future__ import annotations

import logging

import torch

from ..emo.vocals import KIM_VOCAL_2, MODEL_FILE_HINT, VocalSeparator

from . import comfy_services as services
from .audio import audio_waveform

logger = logging.getLogger(__name__)

NODE = "EMO Separate Vocals"

# One loaded model at a time: loading Kim_Vocal_2 (67 MB) takes a second or two, a queue of
# clips reuses it. Keyed by file, its size and time, and the device.
_loaded: dict[tuple, VocalSeparator] = {}


def _separator(model_name: str, device: torch.device) -> VocalSeparator:
    try:
        path = services.resolve_model_file(services.AUDIO_SEPARATOR_FOLDER, model_name, NODE)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}. {MODEL_FILE_HINT}") from error
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, str(device))
    if key not in _loaded:
        _loaded.clear()
        try:
            _loaded[key] = VocalSeparator(path, device=device)
        except (ValueError, FileNotFoundError, ImportError) as error:
            raise type(error)(f"{NODE}: {error}") from error
    return _loaded[key]


def separate(audio, model_name: str) -> dict:
    """The node's body: AUDIO -> AUDIO of the vocals (stereo, 44.1 kHz)."""
    waveform, sample_rate = audio_waveform(audio, NODE)
    if not model_name:
        raise FileNotFoundError(f"{NODE}: no vocal separation model is installed; {MODEL_FILE_HINT}, then refresh "
                                "the page")
    separator = _separator(model_name, services.torch_device())
    progress = services.Progress(1)

    def on_chunk(done: int, total: int) -> None:
        progress.update_absolute(done, total)
        services.check_interrupted()  # raises ComfyUI's own interruption between chunks

    services.check_interrupted()
    try:
        vocals, rate = separator.separate(waveform, sample_rate, progress=on_chunk)
    except ValueError as error:
        raise ValueError(f"{NODE}: {error}") from error
    logger.info("%s: %.2f s at %d Hz, %d channel(s) -> vocals, stereo at %d Hz (%s, %s)", NODE,
                waveform.shape[-1] / sample_rate, sample_rate, waveform.shape[0], rate, separator.spec.name,
                separator.engine)
    return {"waveform": vocals[None], "sample_rate": rate}


def _model_names() -> list[str]:
    """The .onnx files of the audio_separator folders, Kim_Vocal_2.onnx first (ComfyUI's default)."""
    names = services.list_model_files(services.AUDIO_SEPARATOR_FOLDER, services.ONNX_EXTENSIONS)
    return sorted(names, key=lambda name: name.rsplit("/", 1)[-1].lower() != KIM_VOCAL_2.name.lower())


class EMOSeparateVocals:
    DESCRIPTION = (
        "Keeps only the singing voice of a song, as Hallo does before it encodes the audio: the "
        "MDX-Net model Kim_Vocal_2.onnx (Hallo's pretrained_models/audio_separator/) removes the "
        "accompaniment so the lips follow the voice, not the band. Connect its output to "
        "AudioEncode, and the original song to VideoCombine for the soundtrack. Not needed for speech."
    )
    CATEGORY = "EMO/conditioning"
    FUNCTION = "separate"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("vocals",)
    OUTPUT_TOOLTIPS = (
        "The vocals, stereo at 44.1 kHz (peak at most 0.9). Use it to drive the lips; keep the original "
        "audio for the video's sound.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {
                    "tooltip": "A song (voice with music): separating is suggested. Speech alone needs no "
                               "separation; skip this node. Any sample rate; mono or stereo; for a batch, "
                               "the first clip is used.",
                }),
                "model_name": (_model_names(), {
                    "tooltip": "The vocal model from models/audio_separator (or models/hallo/audio_separator): "
                               "Kim_Vocal_2.onnx from Hallo's download. Runs with onnxruntime "
                               "(pip install onnxruntime, or onnxruntime-gpu for CUDA), else OpenCV.",
                }),
            },
        }

    def separate(self, audio, model_name):
        return (separate(audio, model_name),)
