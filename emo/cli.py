"""`python -m emo ...`: the command line of the EMO library (no ComfyUI needed).

Commands:
  generate        portrait + voice -> talking-head video (mp4/webm with the audio)
  batch           a queue of generations from a JSONL file, one video per line, skipping
                  finished ones (`accelerate launch -m emo batch ...` spreads it over GPUs/nodes)
  new-checkpoint  write a randomly initialised checkpoint of a preset (tests, benchmarks, training)
  info            describe a checkpoint

User errors print one line `emo <command>: error: ...` and exit with status 2; no partial
output file is left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("emo.cli")

VIDEO_FORMATS = {".mp4": "h264-mp4", ".webm": "vp9-webm"}


def output_file(path, suffixes, option: str = "--out") -> Path:
    """Check an output path before any work: a known suffix and an existing folder."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {' or '.join(suffixes)}, got {out.name!r}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output folder {out.parent} does not exist; create it first")
    return out


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    from .checkpoints import parse_dtype

    if precision != "auto":
        return parse_dtype(precision)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _crop_mask(mask: torch.Tensor, info: dict, size: int) -> torch.Tensor:
    """Apply the reference's square crop (info from prepare_reference) to a source-size mask."""
    from .face import resize_mask

    x0, y0, x1, y1 = info["box"]
    h, w = mask.shape
    canvas = mask.new_zeros(y1 - y0, x1 - x0)  # outside the source image: no face
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    return resize_mask(canvas, size, size)


@dataclass
class JobInputs:
    """A generation's files, read and checked before a model is loaded: a bad path or an
    undecodable file fails in a second, not after minutes of loading."""

    out: Path
    video_format: str
    image: torch.Tensor  # (H, W, 3) 0..1
    waveform: torch.Tensor  # (C, T)
    sample_rate: int


def read_job_inputs(job) -> JobInputs:
    """`job`: generate's options (`args` of `generate`, or one line of a `batch` file)."""
    from . import audio as audio_lib
    from . import image as image_lib

    out = output_file(job.out, tuple(VIDEO_FORMATS))
    image = image_lib.load_image(job.image)
    waveform, sample_rate = audio_lib.load_audio(job.audio)
    return JobInputs(out, VIDEO_FORMATS[out.suffix.lower()], image, waveform, sample_rate)


DEMO_NOTE = ("no --checkpoint: using the demo model {name}, a demonstration model trained on synthetic drawn "
             "faces only (64 px); for real portraits give --checkpoint with real weights")


def checkpoint_or_demo(checkpoint) -> Path:
    """The checkpoint to load: the given one, or the bundled demo model when none is given."""
    from .checkpoints import DEMO_CHECKPOINT

    if checkpoint is not None:
        return Path(checkpoint)
    if not DEMO_CHECKPOINT.is_file():
        raise FileNotFoundError(f"no --checkpoint given and the demo model {DEMO_CHECKPOINT} is missing; give "
                                "--checkpoint PATH, or rebuild the demo model with examples/train_demo_model.sh")
    return DEMO_CHECKPOINT


def load_pipeline(checkpoint, device: torch.device, precision: str):
    from .pipeline import EMOPipeline

    return EMOPipeline.from_checkpoint(checkpoint, device=device, dtype=pick_dtype(precision, device))


@dataclass
class PreparedVideo:
    """Everything one video needs, made ready (reference cropped, audio encoded, settings
    resolved), so a caller knows its length and step count before the denoising starts."""

    pipeline: object  # EMOPipeline
    out: Path
    video_format: str
    reference: torch.Tensor
    mask: torch.Tensor | None
    features: object  # emo.audio.AudioFeatures
    settings: object  # GenerationSettings as given (None = the model's defaults)
    resolved: object  # the same with the model's defaults filled in
    speed: float | None
    face_embedding: torch.Tensor | None
    crf: int

    @property
    def num_frames(self) -> int:
        return self.features.num_frames

    @property
    def total_steps(self) -> int:
        from .pipeline import num_clips

        return num_clips(self.num_frames, self.resolved.frames_per_clip) * self.resolved.steps

    def summary(self) -> str:
        return (f"{self.num_frames} frames at {self.resolved.fps:g} fps, "
                f"{self.features.duration_seconds():.2f} s")


def prepare_video(pipeline, job, inputs: JobInputs) -> PreparedVideo:
    """Crop the portrait (and its --mask), encode the audio and settle the settings of `job`."""
    from . import image as image_lib
    from .pipeline import GenerationSettings

    defaults = pipeline.config.defaults
    size = job.size or defaults.size
    mask = None
    crop = job.crop
    if job.mask is not None:
        source_mask = image_lib.load_image(job.mask).mean(dim=-1)
        if source_mask.shape != inputs.image.shape[:2]:
            raise ValueError(f"--mask is {tuple(source_mask.shape[::-1])} pixels but the image is "
                             f"{tuple(inputs.image.shape[1::-1])}; give a mask of the image's size")
        if crop == "face":
            crop = "center"  # the mask says where the face is; no detection wanted
            logger.info("a --mask was given: using a centre crop instead of face detection")
    reference, info = image_lib.prepare_reference(inputs.image, size, crop)
    if job.mask is not None:
        mask = _crop_mask(source_mask, info, size)
    fps = job.fps or defaults.fps
    features = pipeline.encode_audio(inputs.waveform, inputs.sample_rate, fps, start_seconds=job.start,
                                     duration_seconds=job.duration)
    weights = (job.pose_weight, job.face_weight, job.lip_weight)
    settings = GenerationSettings(size=size, fps=fps, steps=job.steps, seed=job.seed,
                                  guidance_scale=job.guidance, scheduler=job.scheduler,
                                  frames_per_clip=job.frames_per_clip, motion_frames=job.motion_frames,
                                  region_scales=None if weights == (None,) * 3 else
                                  tuple(1.0 if w is None else w for w in weights))
    face_embedding = _load_face_embedding(job.face_embedding) if job.face_embedding else None
    return PreparedVideo(pipeline=pipeline, out=inputs.out, video_format=inputs.video_format, reference=reference,
                         mask=mask, features=features, settings=settings, resolved=settings.resolve(defaults),
                         speed=job.speed, face_embedding=face_embedding, crf=job.crf)


def render_video(video: PreparedVideo, on_progress=None) -> None:
    """Denoise clip after clip, streaming the frames into the (atomically written) video file."""
    from .video import write_video

    features = video.features
    clips = video.pipeline.iter_clips(video.reference, features, face_mask=video.mask, speed=video.speed,
                                      settings=video.settings, callback=on_progress,
                                      face_embedding=video.face_embedding)
    write_video(video.out, clips, video.resolved.fps, audio=(features.waveform, features.sample_rate),
                format=video.video_format, crf=video.crf,
                metadata={"comment": f"EMO (Emote Portrait Alive) seed={video.settings.seed}"})


def cmd_generate(args) -> None:
    from tqdm import tqdm

    inputs = read_job_inputs(args)
    checkpoint = checkpoint_or_demo(args.checkpoint)
    if args.checkpoint is None:
        print(DEMO_NOTE.format(name=checkpoint.name))
    pipeline = load_pipeline(checkpoint, pick_device(args.device), args.precision)
    video = prepare_video(pipeline, args, inputs)
    with tqdm(total=video.total_steps, desc=f"EMO {video.num_frames} frames", unit="step",
              disable=args.quiet) as bar:
        def on_progress(p):
            bar.update(1)
            bar.set_postfix_str(f"clip {p.clip + 1}/{p.num_clips}")

        render_video(video, on_progress)
    print(f"wrote {video.out} ({video.summary()})")


def _load_face_embedding(path) -> torch.Tensor:
    """A face-recognition embedding saved as .npy, .pt (weights_only) or .safetensors (one tensor)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--face-embedding: no file at {path}")
    if path.suffix == ".npy":
        import numpy as np

        tensor = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = list(load_file(str(path)).values())
        if len(tensors) != 1:
            raise ValueError(f"--face-embedding: {path.name} holds {len(tensors)} tensors; give one")
        tensor = tensors[0]
    else:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"--face-embedding: {path.name} does not hold a tensor")
    return tensor.float().flatten()


def cmd_new_checkpoint(args) -> None:
    from .checkpoints import save_checkpoint
    from .models import EMOModel

    model = EMOModel.from_preset(args.preset, seed=args.seed)
    path = save_checkpoint(model, args.out, dtype=None if args.precision == "fp32" else args.precision,
                           description=f"randomly initialised {args.preset} EMO model (seed {args.seed}); "
                                       "not trained - its videos are noise")
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def cmd_info(args) -> None:
    from .checkpoints import describe

    info = describe(args.checkpoint)
    print(f"{args.checkpoint}: {info['name']}")
    if info["description"]:
        print(f"  {info['description']}")
    print("  defaults: " + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()))


# Modules that add more commands: each has `add_commands(subparsers)`, whose parsers set
# `run=function(args)`. Keeping them apart keeps this file small as commands grow.
COMMAND_MODULES: tuple[str, ...] = ("emo.weights.commands", "emo.train.commands", "emo.evaluate.commands",
                                    "emo.batch")


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
    option("--size", type=int, default=None, help="output width = height in pixels (default 512)")
    option("--guidance", type=float, default=None, help="classifier-free guidance scale")
    option("--scheduler", default="ddim", help="ddim, dpmpp_2m, unipc, euler, ...")
    option("--frames-per-clip", type=int, default=None)
    option("--motion-frames", type=int, default=None)
    option("--mask", default=None, help="face-region mask image (white = face), same size as --image; "
                                        "skips face detection")
    option("--crop", choices=("face", "center", "pad"), default="face", help="how the portrait is made square")
    option("--start", type=float, default=0.0, help="audio start, seconds")
    option("--duration", type=float, default=None, help="audio duration to use, seconds")
    option("--crf", type=int, default=19, help="video quality (lower = better, bigger)")
    for region, label in (("pose", "background/head pose"), ("face", "face"), ("lip", "lips")):
        option(f"--{region}-weight", type=float, default=None,
               help=f"Hallo models: weight of the audio on the {label} (default 1.0)")
    option("--face-embedding", default=None,
           help="Hallo models: the portrait's insightface (buffalo_l) embedding, 512 values "
                "(.npy/.pt/.safetensors); without it zeros are used")
    return actions


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the models run: the same for every video of a run."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="python -m emo", description="EMO: Emote Portrait Alive")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands)

    gen = commands.add_parser("generate", help="portrait + voice -> talking video")
    gen.add_argument("--image", required=True, help="portrait image (any format PIL reads)")
    gen.add_argument("--audio", required=True, help="voice audio (wav/mp3/flac/ogg/m4a, any rate)")
    gen.add_argument("--out", required=True, help="output video, .mp4 (H.264+AAC) or .webm (VP9+Opus)")
    add_job_options(gen)
    add_runtime_options(gen)
    gen.set_defaults(run=cmd_generate)

    from .config import PRESETS

    new = commands.add_parser("new-checkpoint", help="write a randomly initialised checkpoint")
    new.add_argument("--preset", required=True, choices=PRESETS)
    new.add_argument("--out", required=True)
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    new.set_defaults(run=cmd_new_checkpoint)

    info = commands.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .pipeline import GenerationCancelled

    try:
        status = args.run(args)  # None, or an exit status (batch: 1 when a job failed)
    except (FileNotFoundError, ValueError, GenerationCancelled) as error:
        print(f"emo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emo {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
