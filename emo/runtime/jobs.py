"""One generation job, from files to a video: what `generate`, each line of `batch`, and the
evaluation share.

The steps: `read_job_inputs` (paths checked and decoded before any model loads: a bad file
fails in a second) -> `load_pipeline` -> `prepare_job` (portrait cropped and its face-region
mask aligned, audio encoded, settings resolved against the checkpoint's defaults and checked
against what the model was trained for) -> `render_job` (clips streamed into the atomically
written video).

A job's options are those `add_job_options` defines (argparse; a batch line holds the same
keys), so the command line and the jobs file cannot drift apart. Every option value is checked
where it is parsed (`OptionValue`), so a bad value fails before any file is read.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .. import audio as audio_lib
from .. import image as image_lib
from ..checkpoints import DEMO_CHECKPOINT, read_metadata
from ..paste_back import DEFAULT_MAX_SIZE, PasteBack
from ..pipeline import EMOPipeline, GenerationSettings, progress_total
from ..schedulers import SCHEDULERS
from ..speed_from_audio import speed_from_audio
from ..video import VIDEO_FORMATS, format_for_suffix, write_video
from .devices import DEVICE_HELP, MAX_DEFAULT_THREADS, THREADS_HELP, pick_dtype
from .options import FPS, GUIDANCE, SEED, SIZE, SPEED, STEPS, THREADS, OptionValue
from .output import output_path
from .reference import prepare_portrait

VIDEO_SUFFIXES = (".mp4", ".webm")

DEMO_NOTE = ("no --checkpoint: using the demo model {name}, a demonstration model trained on synthetic drawn "
             "faces only (64 px); for real portraits give --checkpoint with real weights")

# A voice this short or this quiet drives (almost) no mouth motion: say so before the work.
SHORT_VOICE_SECONDS = 0.2
SILENT_VOICE_DBFS = -60.0  # RMS level; speech is usually -30..-10 dBFS


@dataclass
class JobInputs:
    """A job's files, read and checked before a model is loaded."""

    out: Path
    video_format: str
    image: torch.Tensor  # (H, W, 3) 0..1
    waveform: torch.Tensor  # (C, T)
    sample_rate: int


def read_job_inputs(job) -> JobInputs:
    """`job`: a job's options (`generate`'s args, or one line of a `batch` file). Checks what can
    be checked without a model: the output path and quality for its format, that the image and
    the voice decode, and that --start lies inside the voice."""
    out = output_path(job.out, VIDEO_SUFFIXES, option="--out")
    video_format = format_for_suffix(out)
    crf_max = VIDEO_FORMATS[video_format].crf_max
    if job.crf > crf_max:
        raise ValueError(f"--crf {job.crf}: {out.suffix} videos take 0..{crf_max} (lower = better); 19 is a good "
                         "default")
    image = image_lib.load_image(job.image)
    waveform, sample_rate = audio_lib.load_audio(job.audio)
    seconds = waveform.shape[-1] / sample_rate
    if job.start and round(job.start * sample_rate) >= waveform.shape[-1]:
        raise ValueError(f"--start {job.start:g}: the voice {Path(job.audio).name} is only {seconds:.2f} s long; "
                         f"give a start below {seconds:.2f}")
    return JobInputs(out, video_format, image, waveform, sample_rate)


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


def echomimic_pipeline(job, device: torch.device) -> EMOPipeline | None:
    """The model of `--echomimic-dir FOLDER [--acc]` (EchoMimic's unchanged pretrained_weights
    folder, every file checked first), or None when the job names no EchoMimic folder."""
    from ..families.echomimic import convert as echomimic_convert

    folder = getattr(job, "echomimic_dir", None)
    acc = bool(getattr(job, "acc", False))
    if folder is None:
        if acc:
            raise ValueError("--acc selects EchoMimic's accelerated weights (denoising_unet_acc.pth); give "
                             "--echomimic-dir PATH too")
        return None
    if getattr(job, "checkpoint", None) is not None:
        raise ValueError(f"--checkpoint {job.checkpoint} and --echomimic-dir {folder} both given; give one of them "
                         "(a converted EchoMimic checkpoint goes in --checkpoint alone)")
    dtype = pick_dtype(getattr(job, "precision", "auto"), device)
    # MOTION_HEADS read at call time: the files do not hold the motion modules' head count.
    model = echomimic_convert.load_echomimic_folder(folder, variant="acc" if acc else "v1", dtype=dtype,
                                                    motion_heads=echomimic_convert.MOTION_HEADS)
    return EMOPipeline(model, device=device)


def add_echomimic_options(parser: argparse.ArgumentParser) -> None:
    """generate's options for running EchoMimic's released folder without converting it."""
    parser.add_argument("--echomimic-dir", default=None, metavar="PATH",
                        help="EchoMimic's pretrained_weights folder, unchanged (denoising_unet.pth, reference_unet.pth, "
                             "motion_module.pth, face_locator.pth, audio_processor/whisper_tiny.pt, sd-vae-ft-mse/, "
                             "sd-image-variations-diffusers/unet/config.json); instead of --checkpoint")
    parser.add_argument("--acc", action="store_true",
                        help="with --echomimic-dir: EchoMimic's accelerated weights (denoising_unet_acc.pth, "
                             "motion_module_acc.pth): 6 steps at cfg 1.0 instead of 30 at 2.5")


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
    crop: dict = field(default_factory=dict)  # prepare_reference's info, plus "mask_from" when a mask was given
    # Things the user should know before waiting for the video ("warning: ..." / "note: ...").
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.features.num_frames

    @property
    def windowed(self) -> bool:
        """True for families that denoise the whole video in overlapping context windows (all
        frames come out at the end) rather than clip after clip."""
        model = self.pipeline.model
        return model.family.clip_schedule(model.config) is not None

    @property
    def num_clips(self) -> int:
        """Clips (or context windows) each denoised `resolved.steps` times."""
        return self.total_steps // self.resolved.steps

    @property
    def total_steps(self) -> int:
        return progress_total(self.pipeline.model, self.num_frames, self.resolved)

    def summary(self) -> str:
        pasted = "" if self.paste_back is None else ", {1}x{0} (pasted back into the photo)".format(
            *self.paste_back.size)
        return (f"{self.num_frames} frames at {self.resolved.fps:g} fps, "
                f"{self.features.duration_seconds():.2f} s{pasted}")

    def plan(self) -> str:
        """One line: where the face is, the crop, the output size, and the work ahead."""
        s, crop = self.resolved, self.crop
        if crop.get("mask_from"):
            face = f"face region from --mask {Path(crop['mask_from']).name}"
        elif crop.get("face_box") is not None:
            x0, y0, x1, y1 = (round(v) for v in crop["face_box"])
            face = f"face found at x {x0}-{x1}, y {y0}-{y1}"
        else:
            face = "no face box"
        width, height = crop.get("source_width", "?"), crop.get("source_height", "?")
        if "box" in crop:
            x0, y0, x1, y1 = crop["box"]
            cut = f"{crop.get('mode', '')} crop {x1 - x0}x{y1 - y0} of the {width}x{height} image"
        else:
            cut = f"the {width}x{height} image"
        guidance = f"guidance {s.guidance_scale:g}" if s.guidance_scale > 1 else "no guidance"
        output = f"{s.size} px"
        if self.paste_back is not None:
            output += " pasted back into {1}x{0}".format(*self.paste_back.size)
        unit = "context window" if self.windowed else "clip"
        count = self.num_clips
        return (f"plan: {face}; {cut} -> {output}; {self.num_frames} frames "
                f"({self.features.duration_seconds():.2f} s at {s.fps:g} fps) = {count} {unit}"
                f"{'s' if count > 1 else ''} "
                f"of {s.frames_per_clip} x {s.steps} {s.scheduler} steps ({self.total_steps} steps), {guidance}, "
                f"seed {s.seed}")


def prepare_job(pipeline: EMOPipeline, job, inputs: JobInputs) -> PreparedJob:
    """Crop the portrait (and its mask), encode the audio and settle the settings of `job`; the
    settings are checked against the model (size multiple) and what it was trained for (notes)."""
    config = pipeline.config
    defaults = config.defaults
    size = job.size or defaults.size
    multiple = config.latent_scale  # whole latent cells (as EMOPipeline checks)
    if size % multiple:
        raise ValueError(f"--size {size}: this model needs a multiple of {multiple} px; it was trained at "
                         f"{defaults.size} px (leave out --size for that)")
    source_mask = image_lib.load_image(job.mask).mean(dim=-1) if job.mask is not None else None
    portrait = prepare_portrait(inputs.image, size, job.crop, mask=source_mask)
    fps = job.fps or defaults.fps
    features = encode_job_audio(pipeline, job, inputs, fps)
    if pipeline.model.config.family == "hallo":
        hallo_identity_for(pipeline.model, job)
    weights = (job.pose_weight, job.face_weight, job.lip_weight)
    settings = GenerationSettings(size=size, fps=fps, steps=job.steps, seed=job.seed,
                                  guidance_scale=job.guidance, scheduler=job.scheduler,
                                  frames_per_clip=job.frames_per_clip, motion_frames=job.motion_frames,
                                  overlap_frames=getattr(job, "overlap_frames", None),
                                  region_scales=None if weights == (None,) * 3 else
                                  tuple(1.0 if w is None else w for w in weights))
    face_embedding = load_face_embedding(job.face_embedding) if job.face_embedding else None
    try:  # before the work, not at the first clip
        pipeline.model.family.check_face_embedding(face_embedding)
    except ValueError as error:
        raise ValueError(f"--face-embedding {Path(job.face_embedding).name}: {error}") from None
    resolved = settings.resolve(defaults)
    crop = {**portrait.info, "mask_from": job.mask}
    speed = job_speed(job, features)
    notes = model_notes(pipeline, resolved, speed) + voice_notes(features)
    return PreparedJob(pipeline=pipeline, out=inputs.out, video_format=inputs.video_format,
                       reference=portrait.image, mask=portrait.mask, features=features, settings=settings,
                       resolved=resolved, speed=speed, face_embedding=face_embedding, crf=job.crf,
                       paste_back=paste_back_for(job, inputs.image, portrait.info), crop=crop, notes=notes)


AUTO_VOCAL_MODEL = "auto"


def hallo_identity_for(model, job) -> None:
    """A Hallo model's identity source for this job: --face-analysis DIR (a model loaded with
    --checkpoint), --no-identity, else what the model was loaded with (--hallo-dir's folder).
    Each job starts from the loaded model's own source (batch jobs share the model)."""
    from ..families.hallo.portrait import attach_identity

    if not hasattr(model, "loaded_hallo_identity"):
        model.loaded_hallo_identity = getattr(model, "hallo_identity", None)
    loaded = model.loaded_hallo_identity
    folder = getattr(job, "face_analysis", None) or (None if loaded is None else loaded.folder)
    no_identity = getattr(job, "no_identity", False)
    if folder is None and not no_identity:
        if hasattr(model, "hallo_identity"):
            del model.hallo_identity  # the family then asks for --face-embedding or an identity choice
        return
    attach_identity(model, folder, identity=not no_identity)


def vocal_model_for(job) -> Path | None:
    """--separate-vocals: the model file, or None when separation is off."""
    choice = getattr(job, "separate_vocals", None)
    if choice is None:
        return None
    if choice != AUTO_VOCAL_MODEL:
        return Path(choice)
    hallo_dir = getattr(job, "hallo_dir", None)
    if hallo_dir is None:
        raise ValueError("--separate-vocals without a path needs --hallo-dir (its audio_separator/Kim_Vocal_2.onnx); "
                         "give the model: --separate-vocals PATH/Kim_Vocal_2.onnx")
    path = Path(hallo_dir) / "audio_separator" / "Kim_Vocal_2.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"--separate-vocals: no {path}; Kim_Vocal_2.onnx comes with Hallo's download "
                                "(pretrained_models/audio_separator/), or give --separate-vocals PATH")
    return path


def encode_job_audio(pipeline: EMOPipeline, job, inputs: JobInputs, fps: float) -> audio_lib.AudioFeatures:
    """The job's audio features; with --separate-vocals, those of the separated voice (as Hallo
    reads it: 16 kHz mono) while the video keeps the original sound."""
    model_path = vocal_model_for(job)
    if model_path is None:
        return pipeline.encode_audio(inputs.waveform, inputs.sample_rate, fps, start_seconds=job.start,
                                     duration_seconds=job.duration)
    from ..vocals import separate_vocals, vocals_as_hallo_reads_them

    trimmed = audio_lib.trim(audio_lib.as_channels_first(inputs.waveform, "--separate-vocals"), inputs.sample_rate,
                             job.start, job.duration)
    vocals, rate = separate_vocals(trimmed, inputs.sample_rate, model_path, device=pipeline.device)
    voice = vocals_as_hallo_reads_them(vocals, rate)
    features = pipeline.encode_audio(voice[None], 16000, fps)
    return audio_lib.AudioFeatures(features=features.features, fps=features.fps, waveform=trimmed,
                                   sample_rate=inputs.sample_rate)


def load_hallo_pipeline(hallo_dir, device: torch.device, precision: str, *, identity: bool = True) -> EMOPipeline:
    """--hallo-dir: Hallo's pretrained_models folder -> its pipeline (identity, landmark masks and
    Hallo's audio front end; see emo.families.hallo.folder)."""
    from ..families.hallo.folder import load_hallo_folder

    model, _ = load_hallo_folder(hallo_dir, identity=identity, dtype=pick_dtype(precision, device))
    return EMOPipeline(model, device=device)


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


def model_notes(pipeline: EMOPipeline, s: GenerationSettings, speed: float | torch.Tensor | None) -> list[str]:
    """Settings the model will run but was not trained for, each as one line."""
    config, notes = pipeline.config, []
    trained = config.defaults.size
    if s.size != trained:
        notes.append(f"warning: the model was trained at {trained} px; at {s.size} px the face will likely come "
                     f"out {'garbled' if s.size > trained else 'blurred or garbled'} (leave out --size for "
                     f"{trained} px)")
    if speed is not None and config.speed is not None:
        low = min(c - r for c, r in zip(config.speed.bucket_centers, config.speed.bucket_radii))
        high = max(c + r for c, r in zip(config.speed.bucket_centers, config.speed.bucket_radii))
        slowest, fastest = (float(speed.min()), float(speed.max())) if torch.is_tensor(speed) else (speed, speed)
        if slowest < low or fastest > high:
            given = f"--speed {speed:g}" if slowest == fastest and not torch.is_tensor(speed) else \
                f"--speed-from-audio {slowest:g}-{fastest:g}"
            notes.append(f"warning: {given} is beyond the speeds this model knows ({max(low, 0):.2f}-"
                         f"{high:.2f}); the head motion will be erratic")
    positions = s.frames_per_clip + s.motion_frames
    if config.temporal is not None and positions > config.temporal.max_frames:
        notes.append(f"warning: {s.frames_per_clip} frames per clip + {s.motion_frames} motion frames = {positions} "
                     f"frame positions; the temporal layers were made for {config.temporal.max_frames}, so motion "
                     "may degrade beyond that")
    return notes


def voice_notes(features: audio_lib.AudioFeatures) -> list[str]:
    """A note when the voice is too short or too quiet to move the mouth."""
    seconds = features.duration_seconds()
    if seconds < SHORT_VOICE_SECONDS:
        return [f"note: the voice is only {seconds:.2f} s long ({features.num_frames} frame"
                f"{'s' if features.num_frames > 1 else ''}); the mouth has no time to move"]
    rms = float(features.waveform.float().pow(2).mean().sqrt())
    level = 20 * math.log10(rms) if rms > 0 else -math.inf
    if level < SILENT_VOICE_DBFS:
        return [f"note: the voice is silent (RMS level {level:.0f} dBFS, below {SILENT_VOICE_DBFS:.0f}); the mouth "
                "will stay closed - check that --audio is the right file and --start the right place"]
    return []


def render_job(video: PreparedJob, on_progress=None, on_clip=None, deterministic: bool = False) -> None:
    """Denoise clip after clip, streaming the frames into the (atomically written) video file.

    on_clip(index, num_clips, seconds): called as each clip's frames are ready, with the seconds
    since the previous one (the first: since the start). deterministic: a byte-identical file
    for the same frames (see `write_video`)."""
    features = video.features
    clips = video.pipeline.iter_clips(video.reference, features, face_mask=video.mask, speed=video.speed,
                                      settings=video.settings, callback=on_progress,
                                      face_embedding=video.face_embedding)
    if on_clip is not None and not video.windowed:
        clips = _timed(clips, video.num_clips, on_clip)
    if video.paste_back is not None:
        clips = video.paste_back.paste_frames(clips)  # the photo's size, in chunks of bounded memory
    write_video(video.out, clips, video.resolved.fps, audio=(features.waveform, features.sample_rate),
                format=video.video_format, crf=video.crf, deterministic=deterministic,
                metadata={"comment": f"EMO (Emote Portrait Alive) seed={video.settings.seed}"})


def _timed(clips, count: int, on_clip):
    start = time.perf_counter()
    for index, frames in enumerate(clips):
        now = time.perf_counter()
        on_clip(index, count, now - start)
        yield frames
        start = time.perf_counter()


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


FRAMES_PER_CLIP = OptionValue(int, at_least=1, at_most=1024)
MOTION_FRAMES = OptionValue(int, at_least=0, at_most=1024)
CRF = OptionValue(int, at_least=0, at_most=max(spec.crf_max for spec in VIDEO_FORMATS.values()))
START = OptionValue(float, at_least=0)
DURATION = OptionValue(float, above=0)
WEIGHT = OptionValue(float, at_least=0)
MAX_SIZE = OptionValue(int, at_least=0, at_most=16384)


@functools.lru_cache(maxsize=1)
def demo_defaults() -> dict | None:
    """The bundled demo model's inference defaults (its file's header only), or None without it."""
    try:
        return json.loads(read_metadata(DEMO_CHECKPOINT)["emo_config"]).get("defaults") or None
    except (OSError, ValueError, KeyError):
        return None


def from_the_checkpoint(key: str, unit: str = "") -> str:
    """'(default: the checkpoint's; the demo model's is 20)' for a setting a checkpoint chooses."""
    demo = demo_defaults()
    if not demo or key not in demo:
        return "(default: the checkpoint's)"
    value = demo[key]
    value = f"{value:g}" if isinstance(value, float) else value
    return f"(default: the checkpoint's; the demo model's is {value}{unit})"


# ---- a job's options (generate's; a batch line's keys) ------------------------------------------
def add_job_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """generate's options for one video. `batch` takes them too, as defaults for every line of
    its file; the returned actions' `dest`s are the keys a line may set."""
    actions = []

    def option(*names, **kwargs) -> None:
        actions.append(parser.add_argument(*names, **kwargs))

    option("--checkpoint", default=None, metavar="FILE",
           help="EMO checkpoint (.safetensors) (default: the bundled demo model for synthetic drawn faces, "
                f"{DEMO_CHECKPOINT.name}); its settings are the defaults of the options below that say so")
    option("--mask", default=None, metavar="IMAGE",
           help="face-region mask (white = face), same size as --image; skips face detection (default: the "
                "face is detected)")
    option("--crop", choices=("face", "center", "pad"), default="face",
           help="how the portrait is made square: around the face, the centre, or padded")
    option("--paste-back", action=argparse.BooleanOptionalAction, default=None,
           help="paste the animated square back into the photo (feathered, colour-matched): a video of the "
                "photo's own size, capped by --max-size (default: whenever the crop is not the whole photo); "
                "--no-paste-back: the model's square crop")
    option("--max-size", type=MAX_SIZE, default=DEFAULT_MAX_SIZE, metavar="PIXELS",
           help=f"long side of a pasted-back video (default {DEFAULT_MAX_SIZE}; 0: the photo's own size): a "
                "larger photo is scaled down; odd sides lose their last row/column")
    option("--size", type=SIZE, default=None, metavar="PIXELS",
           help=f"output width = height, a multiple of 8 {from_the_checkpoint('size', ' px')}")
    option("--fps", type=FPS, default=None, metavar="FPS", help=f"frame rate {from_the_checkpoint('fps')}")
    option("--start", type=START, default=0.0, metavar="SECONDS", help="where in --audio to start")
    option("--duration", type=DURATION, default=None, metavar="SECONDS",
           help="how much of --audio to use (default: to its end)")
    option("--steps", type=STEPS, default=None, metavar="N",
           help=f"denoising steps per clip; more is slower and finer {from_the_checkpoint('steps')}")
    option("--scheduler", choices=sorted(SCHEDULERS), default="ddim", metavar="NAME",
           help=f"sampler: {', '.join(sorted(SCHEDULERS))}")
    option("--guidance", type=GUIDANCE, default=None, metavar="SCALE",
           help=f"classifier-free guidance; <= 1 turns it off {from_the_checkpoint('guidance_scale')}")
    option("--speed", type=SPEED, default=None, metavar="SPEED",
           help="head motion, degrees per frame: about 0.1-1.0 speech, 1.0-1.3 singing "
                f"{from_the_checkpoint('speed')}")
    option("--speed-from-audio", type=SPEED, nargs=2, metavar=("MIN", "MAX"), default=None,
           help="head motion speed per frame from the voice's loudness: MIN in quiet passages and silence, "
                "MAX in the loudest (e.g. 0.3 1.2); replaces --speed (default: off)")
    option("--seed", type=SEED, default=0, metavar="N", help="noise seed; the same seed gives the same video")
    option("--frames-per-clip", type=FRAMES_PER_CLIP, default=None, metavar="N",
           help=f"frames generated together {from_the_checkpoint('frames_per_clip')}")
    option("--motion-frames", type=MOTION_FRAMES, default=None, metavar="N",
           help="earlier frames each clip continues from; 0 = clips are independent "
                f"{from_the_checkpoint('motion_frames')}")
    option("--overlap-frames", type=MOTION_FRAMES, default=None, metavar="N",
           help="frames of the previous clip each clip re-makes, so clips join without a seam "
                f"{from_the_checkpoint('overlap_frames')}; 0: clips meet through the motion frames alone")
    option("--crf", type=CRF, default=19, metavar="N",
           help="video quality, lower = better and bigger: 0-51 for .mp4, 0-63 for .webm")
    for region, label in (("pose", "background/head pose"), ("face", "face"), ("lip", "lips")):
        option(f"--{region}-weight", type=WEIGHT, default=None, metavar="W",
               help=f"Hallo models: weight of the audio on the {label} (default: the checkpoint's, 1.0)")
    option("--face-embedding", default=None, metavar="FILE",
           help="Hallo models: a precomputed ArcFace embedding of the portrait, 512 values (.npy/.pt/.safetensors); "
                "default: computed from the Hallo folder's face_analysis/models (insightface antelopev2)")
    option("--face-analysis", default=None, metavar="DIR",
           help="Hallo checkpoints given with --checkpoint: Hallo's face_analysis folder (models/ holds "
                "scrfd_10g_bnkps.onnx, glintr100.onnx, 2d106det.onnx) for the identity and face/lip masks; "
                "--hallo-dir brings its own")
    option("--no-identity", action="store_true",
           help="Hallo models: run without the portrait's identity embedding (zeros, as Hallo does for a photo "
                "without a face); by choice only: without it a Hallo run needs face_analysis/models")
    option("--separate-vocals", nargs="?", const=AUTO_VOCAL_MODEL, default=None, metavar="KIM_VOCAL_2_ONNX",
           help="separate the voice from music first (MDX-Net Kim_Vocal_2.onnx; suggested for songs, off for "
                "speech): the lips follow the vocals, the video keeps the original sound; without a path, the "
                "--hallo-dir folder's audio_separator/Kim_Vocal_2.onnx")
    return actions


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the models run: the same for every video of a run."""
    group = parser.add_argument_group("how it runs (the same for every video)")
    group.add_argument("--device", default="auto", help=f"{DEVICE_HELP}; auto = a GPU if there is one")
    group.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                       help="number format; auto = fp32 on the CPU, bf16 (else fp16) on a GPU")
    group.add_argument("--threads", type=THREADS, default=None, metavar="N",
                       help=THREADS_HELP.format(cap=MAX_DEFAULT_THREADS))
    group.add_argument("--deterministic", action="store_true",
                       help="byte-identical videos for the same inputs, seed and options on this machine: one CPU "
                            "thread (unless --threads), deterministic GPU kernels, a single-threaded encoder "
                            "without version strings. Costs what the other CPU threads would give: up to their "
                            "number times slower on an idle many-core CPU, not slower on a busy 2-CPU machine "
                            "(bench/RESULTS.md)")
