"""One generation job, from files to a video: what `generate`, each line of `batch`, and the
evaluation share.

The steps: `read_job_inputs` (paths checked and decoded before any model loads: a bad file
fails in a second) -> `load_pipeline` -> `prepare_job` (portrait cropped and its face-region
mask aligned, audio encoded, settings resolved against the checkpoint's defaults) ->
`render_job` (clips streamed into the atomically written video).

A job's options are those `add_job_options` defines (argparse; a batch line holds the same
keys), so the command line and the jobs file cannot drift apart.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .. import audio as audio_lib
from .. import image as image_lib
from ..checkpoints import DEMO_CHECKPOINT
from ..paste_back import DEFAULT_MAX_SIZE, PasteBack
from ..pipeline import EMOPipeline, GenerationSettings, progress_total
from ..speed_from_audio import speed_from_audio
from ..video import format_for_suffix, write_video
from .devices import DEVICE_HELP, pick_dtype
from .output import output_path
from .reference import prepare_portrait

VIDEO_SUFFIXES = (".mp4", ".webm")

DEMO_NOTE = ("no --checkpoint: using the demo model {name}, a demonstration model trained on synthetic drawn "
             "faces only (64 px); for real portraits give --checkpoint with real weights")


@dataclass
class JobInputs:
    """A job's files, read and checked before a model is loaded."""

    out: Path
    video_format: str
    image: torch.Tensor  # (H, W, 3) 0..1
    waveform: torch.Tensor  # (C, T)
    sample_rate: int


def read_job_inputs(job) -> JobInputs:
    """`job`: a job's options (`generate`'s args, or one line of a `batch` file)."""
    out = output_path(job.out, VIDEO_SUFFIXES, option="--out")
    image = image_lib.load_image(job.image)
    waveform, sample_rate = audio_lib.load_audio(job.audio)
    return JobInputs(out, format_for_suffix(out), image, waveform, sample_rate)


def checkpoint_or_demo(checkpoint) -> Path:
    """The checkpoint to load: the given one, or the bundled demo model when none is given."""
    if checkpoint is not None:
        return Path(checkpoint)
    if not DEMO_CHECKPOINT.is_file():
        raise FileNotFoundError(f"no --checkpoint given and the demo model {DEMO_CHECKPOINT} is missing; give "
                                "--checkpoint PATH, or rebuild the demo model with scripts/train_demo_model.sh")
    return DEMO_CHECKPOINT


def load_pipeline(checkpoint, device: torch.device, precision: str) -> EMOPipeline:
    return EMOPipeline.from_checkpoint(checkpoint, device=device, dtype=pick_dtype(precision, device))


@dataclass
class PreparedJob:
    """Everything one video needs, made ready (reference cropped, audio encoded, settings
    resolved), so a caller knows its length and step count before the denoising starts."""

    pipeline: EMOPipeline
    out: Path
    video_format: str
    reference: torch.Tensor
    mask: torch.Tensor | None
    features: audio_lib.AudioFeatures
    settings: GenerationSettings  # as given (None fields = the model's defaults)
    resolved: GenerationSettings  # the same with the model's defaults filled in
    speed: float | torch.Tensor | None  # one speed, one per frame (--speed-from-audio), or the model's
    face_embedding: torch.Tensor | None
    crf: int
    paste_back: PasteBack | None = None  # the frames go back into the photo; None: the square crop

    @property
    def num_frames(self) -> int:
        return self.features.num_frames

    @property
    def total_steps(self) -> int:
        return progress_total(self.pipeline.model, self.num_frames, self.resolved)

    def summary(self) -> str:
        pasted = "" if self.paste_back is None else ", {1}x{0} (pasted back into the photo)".format(
            *self.paste_back.size)
        return (f"{self.num_frames} frames at {self.resolved.fps:g} fps, "
                f"{self.features.duration_seconds():.2f} s{pasted}")


def prepare_job(pipeline: EMOPipeline, job, inputs: JobInputs) -> PreparedJob:
    """Crop the portrait (and its mask), encode the audio and settle the settings of `job`."""
    defaults = pipeline.config.defaults
    size = job.size or defaults.size
    source_mask = image_lib.load_image(job.mask).mean(dim=-1) if job.mask is not None else None
    portrait = prepare_portrait(inputs.image, size, job.crop, mask=source_mask)
    fps = job.fps or defaults.fps
    features = pipeline.encode_audio(inputs.waveform, inputs.sample_rate, fps, start_seconds=job.start,
                                     duration_seconds=job.duration)
    weights = (job.pose_weight, job.face_weight, job.lip_weight)
    settings = GenerationSettings(size=size, fps=fps, steps=job.steps, seed=job.seed,
                                  guidance_scale=job.guidance, scheduler=job.scheduler,
                                  frames_per_clip=job.frames_per_clip, motion_frames=job.motion_frames,
                                  overlap_frames=getattr(job, "overlap_frames", None),
                                  region_scales=None if weights == (None,) * 3 else
                                  tuple(1.0 if w is None else w for w in weights))
    face_embedding = load_face_embedding(job.face_embedding) if job.face_embedding else None
    return PreparedJob(pipeline=pipeline, out=inputs.out, video_format=inputs.video_format,
                       reference=portrait.image, mask=portrait.mask, features=features, settings=settings,
                       resolved=settings.resolve(defaults), speed=job_speed(job, features),
                       face_embedding=face_embedding,
                       crf=job.crf, paste_back=paste_back_for(job, inputs.image, portrait.info))


def job_speed(job, features: audio_lib.AudioFeatures):
    """--speed, or with --speed-from-audio MIN MAX one speed per frame that follows the loudness."""
    if job.speed_from_audio is None:
        return job.speed
    if job.speed is not None:
        raise ValueError(f"--speed {job.speed:g} and --speed-from-audio both given; give one of them")
    low, high = job.speed_from_audio
    try:
        return speed_from_audio(features.waveform, features.sample_rate, features.fps, features.num_frames, low, high)
    except ValueError as error:
        raise ValueError(f"--speed-from-audio: {str(error).removeprefix('speed_from_audio: ')}") from error


def paste_back_for(job, image: torch.Tensor, info: dict) -> PasteBack | None:
    """The paste-back step of `job` (--paste-back / --no-paste-back; unset: whenever the crop is
    not the whole photo, so a square photo the model animates whole stays the model's square)."""
    wanted = job.paste_back
    if wanted is None:
        height, width = image.shape[:2]
        wanted = tuple(info["box"]) != (0, 0, width, height)
    return PasteBack(image, info, max_size=job.max_size, even=True) if wanted else None


def render_job(video: PreparedJob, on_progress=None) -> None:
    """Denoise clip after clip, streaming the frames into the (atomically written) video file."""
    features = video.features
    clips = video.pipeline.iter_clips(video.reference, features, face_mask=video.mask, speed=video.speed,
                                      settings=video.settings, callback=on_progress,
                                      face_embedding=video.face_embedding)
    if video.paste_back is not None:
        clips = video.paste_back.paste_frames(clips)  # the photo's size, in chunks of bounded memory
    write_video(video.out, clips, video.resolved.fps, audio=(features.waveform, features.sample_rate),
                format=video.video_format, crf=video.crf,
                metadata={"comment": f"EMO (Emote Portrait Alive) seed={video.settings.seed}"})


def load_face_embedding(path) -> torch.Tensor:
    """A face-recognition embedding saved as .npy, .pt (weights_only) or .safetensors (one tensor)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--face-embedding: no file at {path}")
    if path.suffix == ".npy":
        tensor = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".safetensors":
        tensors = list(load_file(str(path)).values())
        if len(tensors) != 1:
            raise ValueError(f"--face-embedding: {path.name} holds {len(tensors)} tensors; give one")
        tensor = tensors[0]
    else:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"--face-embedding: {path.name} does not hold a tensor")
    return tensor.float().flatten()


# ---- a job's options (generate's; a batch line's keys) ------------------------------------------
def add_job_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """generate's options for one video. `batch` takes them too, as defaults for every line of
    its file; the returned actions' `dest`s are the keys a line may set."""
    actions = []

    def option(*names, **kwargs) -> None:
        actions.append(parser.add_argument(*names, **kwargs))

    option("--checkpoint", default=None,
           help="EMO checkpoint (.safetensors); default: the bundled demo model for synthetic faces "
                "(emo/assets/emo-demo.safetensors)")
    option("--fps", type=float, default=None, help="frame rate (default: the model's, 25)")
    option("--steps", type=int, default=None, help="denoising steps per clip (default: the model's, 40)")
    option("--seed", type=int, default=0)
    option("--speed", type=float, default=None,
           help="head motion speed: ~0.1-1.0 speech, ~1.0-1.3 singing (default: the model's)")
    option("--speed-from-audio", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
           help="head motion speed per frame from the voice's loudness: MIN in quiet passages and silence, "
                "MAX in the loudest (e.g. 0.3 1.2); replaces --speed")
    option("--size", type=int, default=None, help="output width = height in pixels (default 512)")
    option("--guidance", type=float, default=None, help="classifier-free guidance scale")
    option("--scheduler", default="ddim", help="ddim, dpmpp_2m, unipc, euler, ...")
    option("--frames-per-clip", type=int, default=None)
    option("--motion-frames", type=int, default=None)
    option("--overlap-frames", type=int, default=None,
           help="frames of the previous clip each clip re-makes, so clips join without a seam (default: the "
                "model's; 0: clips meet through the motion frames alone)")
    option("--mask", default=None, help="face-region mask image (white = face), same size as --image; "
                                        "skips face detection")
    option("--crop", choices=("face", "center", "pad"), default="face", help="how the portrait is made square")
    option("--paste-back", action=argparse.BooleanOptionalAction, default=None,
           help="paste the animated square back into the photo (feathered, colour-matched): a video of the "
                "photo's own size, capped by --max-size (default: whenever the crop is not the whole photo); "
                "--no-paste-back: the model's square crop")
    option("--max-size", type=int, default=DEFAULT_MAX_SIZE,
           help=f"long side of a pasted-back video in pixels (default {DEFAULT_MAX_SIZE}; 0: the photo's own "
                "size): a larger photo is scaled down; odd sides lose their last row/column")
    option("--start", type=float, default=0.0, help="audio start, seconds")
    option("--duration", type=float, default=None, help="audio duration to use, seconds")
    option("--crf", type=int, default=19, help="video quality (lower = better, bigger)")
    for region, label in (("pose", "background/head pose"), ("face", "face"), ("lip", "lips")):
        option(f"--{region}-weight", type=float, default=None,
               help=f"Hallo models: weight of the audio on the {label} (default 1.0)")
    option("--face-embedding", default=None,
           help="Hallo models: the portrait's ArcFace embedding, 512 values (.npy/.pt/.safetensors); "
                "without it zeros are used")
    return actions


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the models run: the same for every video of a run."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
