"""VideoCombine: IMAGE frames (+ AUDIO) -> one video file with the sound muxed in, previewed in the node."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..emo.video import VIDEO_FORMATS, write_video

from . import comfy_services as services
from .audio import audio_waveform

logger = logging.getLogger(__name__)

NODE = "EMO Video Combine"
# Widget value -> emo.video format. The names are VideoHelperSuite's, so they read the same.
FORMATS = {
    "video/h264-mp4": "h264-mp4",
    "video/webm": "vp9-webm",
}
CHUNK_FRAMES = 16  # frames converted and encoded at a time


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{NODE}: expected IMAGE frames [N, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{NODE}: got no frames (an empty IMAGE batch); connect EMO Sampler's frames")
    return images


def _chunks(images: torch.Tensor):
    """Views of CHUNK_FRAMES frames: the encoder converts one chunk at a time, so no second
    full copy of the video is made. Checks for Cancel between chunks."""
    for start in range(0, images.shape[0], CHUNK_FRAMES):
        services.check_interrupted()
        yield images[start:start + CHUNK_FRAMES, ..., :3]


def _audio_for_muxing(audio) -> tuple[torch.Tensor, int] | None:
    if audio is None:
        return None
    waveform, sample_rate = audio_waveform(audio, NODE)
    if waveform.shape[0] > 2:
        logger.warning("%s: the audio has %d channels; mixing them down to mono", NODE, waveform.shape[0])
        waveform = waveform.mean(dim=0, keepdim=True)
    return waveform.float().cpu(), sample_rate


def _metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """The workflow and prompt, as core SaveVideo embeds them (drag the file into ComfyUI to
    get the graph back)."""
    if services.metadata_disabled():
        return {}
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def check_video_settings(node: str, format: str, crf: int, frame_rate: float) -> None:
    if format not in FORMATS:
        raise ValueError(f"{node}: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    spec = VIDEO_FORMATS[FORMATS[format]]
    if not 0 <= crf <= spec.crf_max:
        raise ValueError(f"{node}: crf {crf} is outside 0..{spec.crf_max}, the range of {format}; 19 is a good "
                         "default for h264, 32 for webm")
    if not frame_rate > 0:
        raise ValueError(f"{node}: frame_rate must be > 0, got {frame_rate}")


def encode(chunks, width: int, height: int, frame_rate: float, filename_prefix: str, format: str, crf: int,
           save_output: bool, audio=None, prompt=None, extra_pnginfo=None, node: str = NODE) -> tuple[Path, dict]:
    """Stream frame chunks (n, H, W, 3) into a new numbered file in ComfyUI's output (or temp)
    folder, written atomically; returns (path, preview entry). Settings are checked by the caller
    (`check_video_settings`) before any frame is made."""
    kind = "output" if save_output else "temp"
    folder, stem, counter, subfolder = services.save_path(filename_prefix, kind, width, height)
    # stem_00001_.mp4: the form ComfyUI's counter recognises (core SaveVideo writes it), so the
    # next run gets the next number instead of overwriting this file.
    path = folder / f"{stem}_{counter:05}_{VIDEO_FORMATS[FORMATS[format]].extensions[0]}"
    counted = _Counter(chunks)
    write_video(path, counted, frame_rate, audio=_audio_for_muxing(audio), format=FORMATS[format],
                crf=crf, metadata=_metadata(prompt, extra_pnginfo))
    entry = {
        "filename": path.name,
        "subfolder": subfolder,
        "type": kind,
        "format": format,
        "frame_rate": float(frame_rate),
        "frame_count": counted.frames,
        "has_audio": audio is not None,
        "fullpath": str(path),
    }
    logger.info("%s: wrote %s (%d frames at %g fps)", node, path, counted.frames, frame_rate)
    return path, entry


class _Counter:
    """Passes chunks through, counting their frames."""

    def __init__(self, chunks):
        self.chunks, self.frames = chunks, 0

    def __iter__(self):
        for chunk in self.chunks:
            self.frames += int(chunk.shape[0])
            yield chunk


def combine(images: torch.Tensor, frame_rate: float, filename_prefix: str, format: str, crf: int,
            save_output: bool, audio=None, prompt=None, extra_pnginfo=None) -> tuple[Path, dict]:
    """The node's body: write the file, return (path, preview entry)."""
    images = _check_images(images)
    check_video_settings(NODE, format, crf, frame_rate)
    height, width = int(images.shape[1]), int(images.shape[2])
    return encode(_chunks(images), width, height, frame_rate, filename_prefix, format, crf, save_output, audio,
                  prompt, extra_pnginfo)


class EMOVideoCombine:
    DESCRIPTION = (
        "Encodes IMAGE frames into one video file with the audio muxed in (PyAV/FFmpeg), saved to "
        "ComfyUI's output folder (or temp), with the workflow embedded; shows it in the node with "
        "sound (hover to unmute). Frames are encoded as they are read: no second copy of the video "
        "is held in memory. Inputs follow VideoHelperSuite's Video Combine."
    )
    CATEGORY = "EMO/video"
    FUNCTION = "combine"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("filename", "video")
    OUTPUT_TOOLTIPS = (
        "Full path of the written file.",
        "The file as a core VIDEO (for SaveVideo, GetVideoComponents); empty on ComfyUI versions "
        "without the VIDEO type.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, e.g. EMO Sampler's output or an upscaler's."}),
                "frame_rate": ("FLOAT", {
                    "default": 25.0, "min": 1.0, "max": 240.0, "step": 0.01,
                    "tooltip": "Frames per second. Connect EMO Sampler's fps so picture and sound stay in "
                               "sync (double it after a 2x frame interpolator).",
                }),
                "filename_prefix": ("STRING", {
                    "default": "EMO/emo",
                    "tooltip": "File name start; may contain a subfolder ('EMO/portrait') and %date% parts. "
                               "A counter is appended.",
                }),
                "format": (list(FORMATS), {
                    "default": "video/h264-mp4",
                    "tooltip": "video/h264-mp4: H.264 + AAC, plays everywhere. video/webm: VP9 + Opus.",
                }),
                "crf": ("INT", {
                    "default": 19, "min": 0, "max": 63,
                    "tooltip": "Quality: lower is better and bigger. h264 0-51 (19 looks lossless), "
                               "webm 0-63 (about 32).",
                }),
                "save_output": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "On: save to the output folder. Off: a preview in the temp folder, deleted "
                               "when ComfyUI restarts.",
                }),
            },
            "optional": {
                "audio": ("AUDIO", {
                    "tooltip": "Sound to mux in, starting with the first frame: EMO Audio Encode's audio output "
                               "keeps it in sync.",
                }),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    def combine(self, images, frame_rate, filename_prefix, format, crf, save_output, audio=None,
                prompt=None, extra_pnginfo=None, unique_id=None):
        path, entry = combine(images, frame_rate, filename_prefix, format, crf, save_output, audio,
                              prompt, extra_pnginfo)
        # "gifs" is VideoHelperSuite's key for video previews; API clients that read VHS outputs
        # find the file the same way.
        return {"ui": {"gifs": [entry]}, "result": (str(path), services.video_from_file(path))}
