"""`EMOPipeline`: reference image + voice -> talking video, clip after clip.

The steps (paper §3 and §4):
1. encode the audio: wav2vec2 features per video frame (`emo.audio`), ceil(duration x fps) frames;
2. encode the reference image with the VAE; make the face-region mask;
3. for each clip of f frames: run the ReferenceNet once on [reference, n motion frames] (the
   motion frames are the last n latents of the previous clip; zeros for the first clip), project
   the clip's audio windows to tokens, embed the speed, then denoise f frames of noise with the
   backbone for `steps` scheduler steps with classifier-free guidance; decode in bounded chunks.

Classifier-free guidance: the unconditional branch drops the *audio* (zero audio tokens) and the
*reference* (its reference-attention attends only to the frame itself), as the paper implies;
it keeps the motion frames, the face mask and the speed, which anchor continuity and layout
rather than the identity or the lip motion the guidance should strengthen. Training drops
conditions the same way (see emo/train).

Memory is bounded by one clip: `iter_clips` yields each clip's decoded frames as soon as it is
done, so a caller can stream them to a file; `__call__` collects them.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from . import audio as audio_lib
from .faces.boxes import resize_mask
from .faces.region import face_region_mask
from .checkpoints import load_checkpoint, parse_dtype
from .config import InferenceDefaults
from .model import EMOModel
from .models import ReferenceFeatures
from .schedulers import make_scheduler
from .windows import ContextWindows, context_windows

logger = logging.getLogger(__name__)

# With guidance the backbone's rows are [uncond, cond] and the unconditional row's audio tokens
# are zeros: the audio modules are told so (VideoConditioning.audio_of) and may skip that work.
SILENT_UNCOND = (True, False)


class GenerationCancelled(RuntimeError):
    """Raised inside the denoising loop when the caller's cancel hook returns True."""


@dataclass
class GenerationSettings:
    """Per-run choices. `None` means "what the model was trained for" (its config's defaults)."""

    size: int | None = None  # output width = height, pixels
    fps: float | None = None  # defaults to the fps the audio was encoded at
    frames_per_clip: int | None = None  # f
    motion_frames: int | None = None  # n
    steps: int | None = None
    guidance_scale: float | None = None  # <= 1 disables classifier-free guidance
    seed: int = 0
    scheduler: str = "ddim"
    eta: float = 0.0  # DDIM's eta (0 = deterministic DDIM)
    decode_chunk_size: int = 8  # frames per VAE decode call
    region_scales: tuple[float, float, float] | None = None  # regional audio: (pose, face, lip) weights
    # Speed switches; the defaults are the fast paths. The slow ones exist as the benchmark's
    # baseline (bench/benchmark.py) and give the same result up to float rounding.
    reuse_reference: bool = True  # run the ReferenceNet once per clip, not at every step
    batch_guidance: bool = True  # one backbone call for both guidance branches
    # Motion frames as the paper makes them: the previous clip's last n decoded frames,
    # VAE-encoded again, i.e. latents of the kind training feeds (encodings of real frames).
    # False passes the sampler's final latents on directly (saves n VAE encodes per clip), but
    # those drift from what the model was trained on, which shows as a jump at every clip seam
    # (demo model: seam ratio 2.9 vs 2.4 with no motion frames at all).
    motion_from_pixels: bool = True
    # Seams (clip-chained sampling): each clip after the first also denoises the last
    # `overlap_frames` frames of the clip before it, held on that clip's own denoising path at
    # every step (temporal inpainting), so the new frames are made in one piece with the frames
    # they follow; only the new frames are kept. Clips still start every frames_per_clip frames;
    # each costs (f + overlap) / f of a plain one. 0: clips meet only through the motion frames;
    # None: the model's default (the demo model's is 4: seam ratio 1.67 -> 1.43, see bench/RESULTS.md).
    # Windowed sampling (families with a clip schedule) ignores it: its windows overlap anyway.
    overlap_frames: int | None = None

    def resolve(self, defaults: InferenceDefaults) -> "GenerationSettings":
        values = {name: getattr(defaults, name) for name in
                  ("size", "fps", "frames_per_clip", "motion_frames", "steps", "guidance_scale",
                   "region_scales", "overlap_frames")
                  if getattr(self, name) is None}
        resolved = replace(self, **values)
        if self.overlap_frames is None:  # the model's overlap, within a shorter clip asked for
            resolved.overlap_frames = min(resolved.overlap_frames, max(resolved.frames_per_clip, 0))
        checks = [
            (resolved.size > 0, f"size must be > 0, got {resolved.size}"),
            (resolved.fps > 0, f"fps must be > 0, got {resolved.fps}"),
            (resolved.frames_per_clip >= 1, f"frames_per_clip must be >= 1, got {resolved.frames_per_clip}"),
            (resolved.motion_frames >= 0, f"motion_frames must be >= 0, got {resolved.motion_frames}"),
            (resolved.steps >= 1, f"steps must be >= 1, got {resolved.steps}"),
            (resolved.guidance_scale >= 0, f"guidance_scale must be >= 0, got {resolved.guidance_scale}"),
            (resolved.decode_chunk_size >= 1, f"decode_chunk_size must be >= 1, got {resolved.decode_chunk_size}"),
            (0 <= resolved.overlap_frames <= resolved.frames_per_clip,
             f"overlap_frames must be between 0 and frames_per_clip ({resolved.frames_per_clip}), "
             f"got {resolved.overlap_frames}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EMOPipeline settings: {message}.")
        return resolved


@dataclass
class Progress:
    """Where a generation is. Clip-chained sampling: `clip` of `num_clips`, `step` of
    `num_steps` within it. Windowed sampling (the whole video at once): `clip` counts denoising
    steps and `step` the windows of that step. `done` of `total` counts work units either way."""

    clip: int  # 0-based clip index
    num_clips: int
    step: int  # steps finished in this clip (1..num_steps)
    num_steps: int
    # The clip's current latents, (1, 4, f, h, w), and the scheduler's estimate of the clean
    # latents when it gives one (DDIM, DPM-Solver, ...): for previews; do not modify.
    latents: torch.Tensor | None = None
    denoised: torch.Tensor | None = None

    @property
    def done(self) -> int:
        return self.clip * self.num_steps + self.step

    @property
    def total(self) -> int:
        return self.num_clips * self.num_steps

    @property
    def fraction(self) -> float:
        return self.done / self.total


@dataclass
class GenerationResult:
    frames: torch.Tensor  # (F, H, W, 3) float 0..1, CPU
    fps: float
    audio_waveform: torch.Tensor  # (C, T) the audio actually used, at `sample_rate`
    sample_rate: int
    num_clips: int


def num_clips(num_frames: int, frames_per_clip: int) -> int:
    return math.ceil(num_frames / frames_per_clip)


def progress_total(model: EMOModel, num_frames: int, settings: "GenerationSettings") -> int:
    """The work units of one generation (resolved settings): what Progress.total will be."""
    schedule = model.family.clip_schedule(model.config)
    if schedule is None:
        return num_clips(num_frames, settings.frames_per_clip) * settings.steps
    return len(context_windows(num_frames, settings.frames_per_clip, settings.motion_frames, schedule)) * settings.steps


@dataclass
class SpeedCurve:
    """Head-motion speed keyframes: (time in seconds, speed) pairs, linearly interpolated and
    held constant before the first and after the last keyframe."""

    keyframes: list[tuple[float, float]]

    def __post_init__(self) -> None:
        if not self.keyframes:
            raise ValueError("SpeedCurve: give at least one (seconds, speed) keyframe.")
        self.keyframes = sorted((float(t), float(v)) for t, v in self.keyframes)
        if any(t < 0 for t, _ in self.keyframes):
            raise ValueError(f"SpeedCurve: keyframe times must be >= 0 seconds, got {self.keyframes}.")

    def sample(self, num_frames: int, fps: float) -> torch.Tensor:
        """Speed at each video frame's time (i / fps): (num_frames,)."""
        times = torch.tensor([t for t, _ in self.keyframes], dtype=torch.float64)
        values = torch.tensor([v for _, v in self.keyframes], dtype=torch.float64)
        frame_times = torch.arange(num_frames, dtype=torch.float64) / fps
        index = torch.searchsorted(times, frame_times, right=True).clamp(1, len(times) - 1)
        if len(times) == 1:
            return values.expand(num_frames).float().clone()
        t0, t1 = times[index - 1], times[index]
        weight = ((frame_times - t0) / (t1 - t0).clamp(min=1e-12)).clamp(0, 1)
        return (values[index - 1] + weight * (values[index] - values[index - 1])).float()


def speed_track(speed, num_frames: int, fps: float = 25.0) -> torch.Tensor:
    """A constant speed (float), a `SpeedCurve`, or one value per frame -> (num_frames,) float."""
    if isinstance(speed, (int, float)):
        return torch.full((num_frames,), float(speed))
    if isinstance(speed, SpeedCurve):
        return speed.sample(num_frames, fps)
    track = torch.as_tensor(speed, dtype=torch.float32).flatten()
    if track.numel() != num_frames:
        raise ValueError(
            f"EMOPipeline: the speed curve has {track.numel()} values but the audio has "
            f"{num_frames} frames; give one value per frame, a SpeedCurve or one constant speed."
        )
    return track


def _row_of(conditions: dict, i: int) -> dict:
    """Backbone conditions of guidance row i (tensors with a batch of 2 are sliced)."""
    def pick(value):
        if isinstance(value, torch.Tensor) and value.shape[0] == 2:
            return value[i:i + 1]
        return value

    out = {k: pick(v) for k, v in conditions.items() if k not in ("reference", "reference_rows")}
    out["reference_rows"] = (conditions["reference_rows"][i],)
    reference = conditions["reference"]
    out["reference"] = ReferenceFeatures({k: pick(v) for k, v in reference.attention.items()},
                                         {k: pick(v) for k, v in reference.motion.items()})
    return out


def _last(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """The last n entries of x along dim (none when n == 0, unlike x[-0:])."""
    return x.narrow(dim, x.shape[dim] - n, n)


class EMOPipeline:
    # Networks that are large enough to move between devices in low-VRAM mode; the small ones
    # (face locator, projections, speed encoder) stay on the execution device.
    OFFLOADED = ("reference_net", "backbone", "vae", "audio_encoder")

    def __init__(self, model: EMOModel, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, offload: bool = False):
        """offload: keep the large networks on the CPU and move each to `device` only while it
        runs (ReferenceNet, backbone, VAE, wav2vec2 in turn), so peak GPU memory is that of
        the largest one, at the cost of the transfers."""
        dtype = parse_dtype(dtype)
        if dtype is not None and dtype != model.dtype:
            # The pipeline casts a copy: the caller's model keeps its dtype (casting it in place
            # changed a model the caller still held). Peak memory is both copies for a moment;
            # load in the wanted dtype (load_checkpoint(..., dtype=...)) to avoid it.
            model = copy.deepcopy(model).to(dtype=dtype)
        self.offload = offload
        if offload:
            self._device = torch.device(device) if device is not None else model.device
            model = model.to(dtype=dtype) if dtype is not None else model
            for name, child in model.named_children():
                if child is not None and name not in self.OFFLOADED:
                    child.to(self._device)
        else:
            if device is not None or dtype is not None:
                model = model.to(device=device, dtype=dtype)
            self._device = model.device
        self.model = model.eval()

    def optimize(self, *, channels_last: bool = False, compile: bool = False) -> "EMOPipeline":
        """Opt-in speed-ups, to be measured with bench/benchmark.py on your GPU:
        channels_last: NHWC memory layout for the convolutional networks (often faster with
        fp16/bf16 tensor cores); compile: `torch.compile` the backbone and ReferenceNet in place
        (slow first clip while it compiles; a fixed clip shape avoids recompiles)."""
        model = self.model
        if channels_last:
            for part in (model.reference_net, model.backbone, model.vae, model.face_locator):
                part.to(memory_format=torch.channels_last)
        if compile:
            model.backbone.compile(dynamic=False)
            model.reference_net.compile(dynamic=False)
        return self

    @contextlib.contextmanager
    def _running(self, module: torch.nn.Module):
        """Low-VRAM mode: `module` is on the execution device only inside this block."""
        if not self.offload:
            yield module
            return
        module.to(self._device)
        try:
            yield module
        finally:
            module.to("cpu")
            if self._device.type == "cuda":
                torch.cuda.empty_cache()

    @classmethod
    def from_checkpoint(cls, path, *, device="cpu", dtype=None) -> "EMOPipeline":
        return cls(load_checkpoint(path, device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        """Where the computation runs."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self):
        return self.model.config

    # ---- 1. audio --------------------------------------------------------------------------
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, fps: float | None = None, *,
                     start_seconds: float = 0.0, duration_seconds: float | None = None,
                     progress=None) -> "audio_lib.AudioFeatures":
        """waveform: (T), (C, T) or (B, C, T) at any rate -> per-frame wav2vec2 features."""
        fps = self.config.defaults.fps if fps is None else fps
        with self._running(self.model.audio_encoder):
            return self.model.family.encode_audio(self.model, waveform, sample_rate, fps,
                                                  start_seconds=start_seconds, duration_seconds=duration_seconds,
                                                  progress=progress)

    # ---- 2. reference and face mask -------------------------------------------------------
    def _reference_pixels(self, image: torch.Tensor, size: int) -> torch.Tensor:
        """(H, W, 3) or (N, H, W, 3) in 0..1, square -> (1, 3, size, size) in 0..1."""
        if image.ndim == 4:
            image = image[0]
        if image.ndim != 3:
            raise ValueError(f"EMOPipeline: the reference image must be (H, W, 3), got {tuple(image.shape)}.")
        return self._square_pixels(image[None], size, "the reference image")

    def _square_pixels(self, images: torch.Tensor, size: int, what: str) -> torch.Tensor:
        """(N, H, W, 3) in 0..1, square -> (N, 3, size, size) in 0..1."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"EMOPipeline: {what} must be (H, W, 3) RGB, got {tuple(images.shape[1:])}.")
        h, w = images.shape[1:3]
        if h != w:
            raise ValueError(
                f"EMOPipeline: {what} is {w}x{h}; it must be square. Prepare it with "
                "emo.image.prepare_reference (or the LoadReference node), which crops around the face."
            )
        x = images.permute(0, 3, 1, 2).float()
        if h != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return x.clamp(0, 1)

    @torch.inference_mode()
    def encode_reference(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1 -> VAE latents (N, 4, H/8, W/8), scaled: the reference, and the
        motion frames made from a clip's last frames."""
        with self._running(self.model.vae) as vae:
            x = (pixels * 2 - 1).to(self.device, vae.dtype)
            return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

    def face_mask(self, image: torch.Tensor, mask: torch.Tensor | None, size: int,
                  expand_ratio: float = 0.2) -> torch.Tensor:
        """The face-region mask at `size` x `size`: the given one (resized) or a detected box."""
        if image.ndim == 4:
            image = image[0]
        region = face_region_mask(image, expand_ratio=expand_ratio, mask=mask)
        return resize_mask(region, size, size)

    # ---- 3. clips --------------------------------------------------------------------------
    @torch.inference_mode()
    def iter_clips(
        self,
        reference_image: torch.Tensor,
        audio: "audio_lib.AudioFeatures",
        *,
        face_mask: torch.Tensor | None = None,
        speed=None,
        settings: GenerationSettings | None = None,
        callback: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        face_embedding: torch.Tensor | None = None,
        motion_images: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the decoded frames of each clip, (n, H, W, 3) float 0..1 on the CPU; the clips
        together have exactly `audio.num_frames` frames.

        reference_image: (H, W, 3) square, 0..1; face_mask: (H, W) or None to detect the face;
        speed: float, SpeedCurve or one value per frame; face_embedding: (E,) face-recognition
        embedding, for families that condition on one (see the family); motion_images: (K, H, W, 3)
        square, 0..1, the frames just before the audio starts (e.g. the end of an earlier video
        of this face, to continue it): the first clip's motion frames are their last n, made as
        a later clip's are. None (or K < n for the missing ones): the model's first-clip motion
        frames (the family's: zeros or copies of the reference)."""
        model = self.model
        family = model.family
        s = (settings or GenerationSettings()).resolve(model.config.defaults)
        if abs(s.fps - audio.fps) > 1e-6:
            raise ValueError(
                f"EMOPipeline: the audio was encoded at {audio.fps} fps but settings ask for "
                f"{s.fps} fps; encode the audio at the video's frame rate."
            )
        # Any whole number of latent cells works: each up level resizes to its skip's size.
        multiple = model.config.latent_scale
        if s.size % multiple:
            raise ValueError(f"EMOPipeline: size {s.size} must be a multiple of {multiple} for this model.")
        speed = model.config.defaults.speed if speed is None else speed
        total = audio.num_frames
        speeds = speed_track(speed, total, s.fps)
        f, n = s.frames_per_clip, s.motion_frames
        clips = num_clips(total, f)
        device, dtype = self.device, self.dtype

        pixels = self._reference_pixels(reference_image, s.size)
        mask = self.face_mask(reference_image, face_mask, s.size)  # (size, size)
        ref_latent = self.encode_reference(pixels).to(dtype)  # (1, 4, h, w)
        h, w = ref_latent.shape[-2:]
        generator = torch.Generator(device="cpu").manual_seed(s.seed)
        scheduler = make_scheduler(s.scheduler, model.config.scheduler)
        use_cfg = s.guidance_scale > 1.0
        rows = (False, True) if use_cfg else None  # guidance rows [uncond, cond]
        schedule = family.clip_schedule(model.config)
        face_embedding = family.portrait_conditioning(model, pixels[0].permute(1, 2, 0).float().cpu(), face_embedding)
        video = family.video_conditioning(model, mask=mask, face_embedding=face_embedding,
                                          motion_frames=0 if schedule else n, region_scales=s.region_scales,
                                          use_cfg=use_cfg, latent_hw=(h, w))
        if schedule is not None:
            yield from self._windowed(schedule, s, audio, ref_latent, video, rows, generator, scheduler, callback,
                                      should_cancel)
            return

        motion_latents = family.first_motion_latents(model.config, ref_latent, n)
        if n > 0 and model.config.defaults.first_motion_frames == "reference":
            masked = family.motion_pixels(model.config, pixels.repeat(n, 1, 1, 1), mask, generator)
            if masked is not None:  # copies of the reference, changed before encoding (Hallo2)
                motion_latents = self.encode_reference(masked)[None].to(dtype)
        if motion_images is not None and n > 0:
            # Only the last n frames are used: resize and encode just those.
            recent_images = motion_images[-n:] if motion_images.ndim == 4 else motion_images
            given = self.encode_reference(self._square_pixels(recent_images, s.size, "motion_images"))[None].to(dtype)
            motion_latents = _last(torch.cat([motion_latents, given], dim=1), n, dim=1)
        motion_speeds = speeds[:1].repeat(n)
        # Overlap (see GenerationSettings.overlap_frames): the motion frames of a clip are the n
        # frames before its overlap, so n + o recent latents are kept; `path` holds the previous
        # clip's last o frames at every denoising step, which the next clip's first o follow.
        o = min(s.overlap_frames, f) if clips > 1 else 0
        history = motion_latents  # (1, <= n + o, 4, h, w): the latest frames, VAE-encoded
        history_speeds = motion_speeds
        path = None
        for clip in range(clips):
            start = clip * f
            lead = o if clip > 0 else 0  # frames re-made from the previous clip
            frame_ids = torch.arange(start - lead, start + f).clamp(max=total - 1)  # last clip: pad by repeat
            if o:
                motion_latents = history.narrow(1, 0, n) if lead else _last(history, n, dim=1)
                motion_speeds = history_speeds[:n] if lead else _last(history_speeds, n, dim=0)
            images = video.reference_images(ref_latent, motion_latents)

            def run_reference(images=images):
                with self._running(model.reference_net) as reference_net:
                    return reference_net(images, context=video.reference_context)
            tokens = family.clip_tokens(model, audio, frame_ids)  # (1, f, K, D)
            clip_speeds = speeds[frame_ids]
            speed_embedding = None
            if model.speed_encoder is not None:
                speed_embedding = model.speed_encoder(torch.cat([motion_speeds, clip_speeds])[None].to(device))
            if use_cfg:
                tokens = torch.cat([torch.zeros_like(tokens), tokens])  # the unconditional row hears nothing
            conditions = dict(reference=run_reference(), reference_rows=rows, speed=speed_embedding,
                              face_features=video.face_features, context=video.context_of(tokens),
                              audio=video.audio_of(tokens, silent_rows=SILENT_UNCOND if use_cfg else None))
            keep = min(f, total - start)
            # The frames the next clip re-makes: this clip's last o kept ones (a short last clip
            # has no next clip).
            record = (lead + keep - o, o) if o and clip + 1 < clips else None
            with self._running(model.backbone):
                latents, path = self._denoise(scheduler, s, generator, (1, 4, lead + f, h, w), conditions, clip,
                                              clips, callback, should_cancel,
                                              None if s.reuse_reference else run_reference,
                                              batched=s.batch_guidance or video.batched_guidance_only,
                                              follow=path if lead else None, record=record)
            frames = self.decode(latents[:, :, lead:lead + keep], s.decode_chunk_size)
            if clip + 1 < clips and n > 0:
                # The next clip's motion frames: the last n (+ o) frames generated so far (f may be
                # < n), as VAE latents of their pixels (see GenerationSettings.motion_from_pixels).
                wanted = min(n + o, f)
                if s.motion_from_pixels:
                    recent_pixels = _last(frames, wanted, 0).permute(0, 3, 1, 2)
                    masked = family.motion_pixels(model.config, recent_pixels, mask, generator)
                    recent = self.encode_reference(recent_pixels if masked is None else masked)[None].to(dtype)
                else:
                    recent = latents[:, :, lead:lead + keep].permute(0, 2, 1, 3, 4).to(dtype)  # (1, f, 4, h, w)
                history = _last(torch.cat([history, recent], dim=1), n + o, dim=1)
                history_speeds = _last(torch.cat([history_speeds, clip_speeds[lead:]]), n + o, dim=0)
                motion_latents = _last(history, n, dim=1)
                motion_speeds = _last(history_speeds, n, dim=0)
            yield frames

    def _windowed(self, schedule: ContextWindows, s: GenerationSettings, audio, ref_latent, video, rows,
                  generator, scheduler, callback, should_cancel) -> Iterator[torch.Tensor]:
        """Windowed sampling: every frame's latents at once, denoised step by step in overlapping
        windows whose predictions are averaged per frame; then decoded in chunks. The
        ReferenceNet runs once, on the reference alone."""
        model, device = self.model, self.device
        total, f, overlap = audio.num_frames, s.frames_per_clip, s.motion_frames
        if overlap >= f:
            raise ValueError(f"EMOPipeline: the windows' overlap ({overlap} frames) must be smaller than the window "
                             f"({f} frames).")
        h, w = ref_latent.shape[-2:]
        no_motion = ref_latent.new_zeros(1, 0, *ref_latent.shape[1:])
        with self._running(model.reference_net) as reference_net:
            reference = reference_net(video.reference_images(ref_latent, no_motion), context=video.reference_context)
        scheduler.set_timesteps(s.steps, device=device)
        latents = torch.randn((1, 4, total, h, w), generator=generator, dtype=torch.float32)
        if schedule.noise_clamp is not None:
            latents = latents.clamp(-schedule.noise_clamp, schedule.noise_clamp)
        latents = (latents * scheduler.init_noise_sigma).to(device)
        step_kwargs = {"eta": s.eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
        with self._running(model.backbone):
            for i, t in enumerate(scheduler.timesteps):
                guided = self.window_prediction(schedule, s, scheduler, latents, t, i, reference, video, rows, audio,
                                                callback, should_cancel)["guided"]
                latents = scheduler.step(guided, t, latents, **step_kwargs).prev_sample
        for start in range(0, total, s.decode_chunk_size):
            yield self.decode(latents[:, :, start:start + s.decode_chunk_size], s.decode_chunk_size)

    def window_prediction(self, schedule: ContextWindows, s: GenerationSettings, scheduler, latents, t,
                          step_index: int, reference, video, rows, audio, callback=None, should_cancel=None) -> dict:
        """One step of windowed sampling: every window's prediction at timestep t (step
        `step_index`), summed per frame. Returns {"sum": (R, 4, F, h, w), "counter": (F,),
        "prediction": the per-frame result before guidance, "guided": what the scheduler gets}."""
        model, device, dtype = self.model, self.device, self.dtype
        total, f, overlap = latents.shape[2], s.frames_per_clip, s.motion_frames
        windows = context_windows(total, f, overlap, schedule, step=step_index)
        batched = s.batch_guidance or video.batched_guidance_only
        prediction_sum = torch.zeros((2 if rows else 1, *latents.shape[1:]), device=device)
        counter = torch.zeros(total, device=device)
        alpha = scheduler.alphas_cumprod.to(device)[int(t)]
        for k, window in enumerate(windows):
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"generation cancelled at step {step_index + 1}/{s.steps}")
            index = torch.tensor(window, device=device)
            tokens = model.family.clip_tokens(model, audio, torch.tensor(window))
            if rows:
                tokens = torch.cat([torch.zeros_like(tokens), tokens])  # the unconditional row hears nothing
            conditions = dict(reference=reference, reference_rows=rows, speed=None, face_features=video.face_features,
                              context=video.context_of(tokens),
                              audio=video.audio_of(tokens, silent_rows=SILENT_UNCOND if rows else None))
            x = scheduler.scale_model_input(latents[:, :, index], t).to(dtype)
            prediction = self._predict(x, t, conditions, batched)
            if schedule.velocity_round_trip:  # to x0 and back, as the peer's accelerated pipeline does
                x0 = alpha.sqrt() * x.float() - (1 - alpha).sqrt() * prediction
                prediction = (x0 - alpha.sqrt() * x.float()) / -(1 - alpha).sqrt()
            prediction_sum.index_add_(2, index, prediction)
            counter.index_add_(0, index, torch.ones(len(window), device=device))
            if callback is not None:
                callback(Progress(clip=step_index, num_clips=s.steps, step=k + 1, num_steps=len(windows),
                                  latents=latents))
        mean = prediction_sum / counter.view(1, 1, -1, 1, 1)
        if rows:
            uncond, cond = mean.chunk(2)
            guided = uncond + s.guidance_scale * (cond - uncond)
        else:
            guided = mean if schedule.mean_without_guidance else prediction_sum
        return {"sum": prediction_sum, "counter": counter,
                "prediction": mean if rows or schedule.mean_without_guidance else prediction_sum, "guided": guided}

    def _denoise(self, scheduler, s: GenerationSettings, generator, shape, conditions: dict, clip: int,
                 clips: int, callback, should_cancel, rerun_reference=None, batched: bool = True,
                 follow: list[torch.Tensor] | None = None, record: tuple[int, int] | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Denoise one clip. follow: the latents of this clip's first frames at every step (and
        after the last), from the clip before it, which they are held to; record: (first, count),
        the frames whose latents at every step are returned for the next clip to follow.
        Returns (the final latents, the recorded path or None)."""
        device, dtype = self.device, self.dtype
        scheduler.set_timesteps(s.steps, device=device)
        if follow is not None:
            # The followed frames draw no noise of their own: the other frames get the noise
            # they would get without overlap, frame for frame.
            lead = follow[0].shape[2]
            fresh = torch.randn((*shape[:2], shape[2] - lead, *shape[3:]), generator=generator, dtype=torch.float32)
            latents = torch.cat([follow[0].cpu(), fresh], dim=2).to(device)
        else:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
            latents = latents * scheduler.init_noise_sigma
        path = [] if record is not None else None
        step_kwargs = {}
        step_params = inspect.signature(scheduler.step).parameters
        if "eta" in step_params:
            step_kwargs["eta"] = s.eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator
        for i, t in enumerate(scheduler.timesteps):
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"generation cancelled at clip {clip + 1}/{clips}, step {i + 1}/{s.steps}")
            if follow is not None:
                latents[:, :, :lead] = follow[i]
            if path is not None:
                path.append(latents[:, :, record[0]:record[0] + record[1]].clone())
            if rerun_reference is not None:  # baseline: the ReferenceNet at every step
                conditions = {**conditions, "reference": rerun_reference()}
            model_input = scheduler.scale_model_input(latents, t).to(dtype)
            prediction = self._predict(model_input, t, conditions, batched)
            if conditions["reference_rows"] is not None:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + s.guidance_scale * (cond - uncond)
            step = scheduler.step(prediction, t, latents, **step_kwargs)
            latents = step.prev_sample
            if callback is not None:
                callback(Progress(clip=clip, num_clips=clips, step=i + 1, num_steps=s.steps, latents=latents,
                                  denoised=getattr(step, "pred_original_sample", None)))
        if follow is not None:
            latents[:, :, :lead] = follow[-1]
        if path is not None:
            path.append(latents[:, :, record[0]:record[0] + record[1]].clone())
        return latents, path

    def _predict(self, x: torch.Tensor, t, conditions: dict, batched: bool) -> torch.Tensor:
        """The backbone's prediction; with guidance, rows [uncond, cond] in one batch or, as the
        benchmark's baseline, in two calls."""
        backbone = self.model.backbone
        if conditions["reference_rows"] is None:
            return backbone(x, t, **conditions).float()
        if batched:
            return backbone(torch.cat([x, x]), t, **conditions).float()
        return torch.cat([backbone(x, t, **_row_of(conditions, i)).float() for i in (0, 1)])

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """(1, 4, F, h, w) latents -> (F, H, W, 3) float 0..1 on the CPU, `chunk_size` frames
        per VAE call so memory does not grow with F."""
        with self._running(self.model.vae) as vae:
            frames = latents[0].permute(1, 0, 2, 3)  # (F, 4, h, w)
            out = []
            for i in range(0, frames.shape[0], chunk_size):
                chunk = frames[i:i + chunk_size].to(self.device, vae.dtype) / vae.config.scaling_factor
                image = vae.decode(chunk).sample.float()
                out.append(((image + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu())
            return torch.cat(out)

    def __call__(self, reference_image: torch.Tensor, audio: "audio_lib.AudioFeatures", **kwargs) -> GenerationResult:
        """Run every clip and return all frames (see `iter_clips` for the arguments)."""
        settings = kwargs.get("settings") or GenerationSettings()
        chunks = list(self.iter_clips(reference_image, audio, **kwargs))
        frames = torch.cat(chunks)
        return GenerationResult(frames=frames, fps=audio.fps, audio_waveform=audio.waveform,
                                sample_rate=audio.sample_rate,
                                num_clips=num_clips(audio.num_frames,
                                                    settings.resolve(self.config.defaults).frames_per_clip))
