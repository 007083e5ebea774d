"""EMO Sample To Video: EMOSampler and EMO Video Combine in one node, for audio of any length.

EMOSampler outputs every frame as one IMAGE batch, which ComfyUI holds in RAM (float32: 3 MB
per 512 px frame, 4.7 GB per minute at 25 fps). This node streams each clip into the video
file as soon as it is decoded, so memory stays that of one clip however long the audio is; it
keeps a few evenly spaced frames as an IMAGE preview.
"""

from __future__ import annotations

import logging

import torch

from . import comfy_services as services
from .sampler import EMOSampler, start_sampling
from .video import EMOVideoCombine, check_video_settings, encode

logger = logging.getLogger(__name__)

NODE = "EMO Sample To Video"


class PreviewFrames:
    """Keeps `count` evenly spaced frames of a stream of `total` frames (the first and last
    among them), copying only those."""

    def __init__(self, total: int, count: int, size: int):
        count = max(1, min(count, total))
        self.wanted = sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)})
        self.frames = torch.zeros(len(self.wanted), size, size, 3)
        self.seen = 0

    def take(self, chunk: torch.Tensor) -> torch.Tensor:
        for slot, index in enumerate(self.wanted):
            if self.seen <= index < self.seen + chunk.shape[0]:
                self.frames[slot] = chunk[index - self.seen]
        self.seen += chunk.shape[0]
        return chunk


def sample_to_video(model, reference, audio_features, seed, steps, cfg, scheduler, frames_per_clip, motion_frames,
                    filename_prefix, format, crf, save_output, preview_frames, face_mask=None, speed=None,
                    audio=None, region_weights=None, prompt=None, extra_pnginfo=None, node_id=None):
    """The node's body: (path, preview entry, preview IMAGE, readout)."""
    run = start_sampling(model, reference, audio_features, seed, steps, cfg, scheduler, frames_per_clip,
                         motion_frames, face_mask, speed, node_id=node_id, region_weights=region_weights, node=NODE)
    check_video_settings(NODE, format, crf, run.fps)
    preview = PreviewFrames(run.total, preview_frames, run.reference.size)
    chunks = (preview.take(chunk) for chunk in run.clips())
    size = run.reference.size
    path, entry = encode(chunks, size, size, run.fps, filename_prefix, format, crf, save_output, audio, prompt,
                         extra_pnginfo, node=NODE)
    return path, entry, preview.frames, run.info


def _input_types() -> dict:
    sampler = EMOSampler.INPUT_TYPES()
    video = EMOVideoCombine.INPUT_TYPES()
    required = {**sampler["required"]}
    for name in ("filename_prefix", "format", "crf", "save_output"):
        required[name] = video["required"][name]
    required["preview_frames"] = ("INT", {
        "default": 16, "min": 1, "max": 256,
        "tooltip": "How many evenly spaced frames (first and last among them) come out as the preview IMAGE; "
                   "the video file has every frame.",
    })
    optional = {**sampler["optional"], "audio": video["optional"]["audio"]}
    return {"required": required, "optional": optional, "hidden": {**video["hidden"]}}


class EMOSampleToVideo:
    DESCRIPTION = (
        "EMO Sampler and EMO Video Combine in one, for long audio: each clip is written into the video "
        "file as soon as it is made, so memory does not grow with the length of the audio (EMO Sampler "
        "keeps every frame in RAM: about 4.7 GB per minute at 512 px). Outputs the file, core VIDEO, "
        "and a few frames as a preview IMAGE."
    )
    CATEGORY = "EMO/sampling"
    FUNCTION = "sample"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO", "IMAGE", "FLOAT")
    RETURN_NAMES = ("filename", "video", "preview_frames", "fps")
    OUTPUT_TOOLTIPS = (
        "Full path of the written file.",
        "The file as a core VIDEO (for SaveVideo, GetVideoComponents); empty on ComfyUI versions without it.",
        "preview_frames evenly spaced frames of the video.",
        "The video's frame rate.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return _input_types()

    def sample(self, model, reference, audio_features, seed, steps, cfg, scheduler, frames_per_clip, motion_frames,
               filename_prefix, format, crf, save_output, preview_frames, face_mask=None, speed=None, audio=None,
               pose_weight=1.0, face_weight=1.0, lip_weight=1.0, prompt=None, extra_pnginfo=None, unique_id=None):
        path, entry, preview, info = sample_to_video(
            model, reference, audio_features, seed, steps, cfg, scheduler, frames_per_clip, motion_frames,
            filename_prefix, format, crf, save_output, preview_frames, face_mask, speed, audio,
            (pose_weight, face_weight, lip_weight), prompt, extra_pnginfo, unique_id)
        return {"ui": {"gifs": [entry], "emo_readout": [info]},
                "result": (str(path), services.video_from_file(path), preview, info["fps"])}

