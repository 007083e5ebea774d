"""EMOSampler: model + reference + audio tokens + face mask + speed -> IMAGE frames and fps."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..emo.audio import AudioFeatures
from ..emo.faces.boxes import FaceNotFoundError
from ..emo.image import to_pil
from ..emo.pipeline import GenerationSettings, num_clips, progress_total
from ..emo.runtime.reference import crop_mask
from ..emo.schedulers import SCHEDULERS

from . import comfy_services as services
from .audio import readout
from .model import EMOModelHandle
from .reference import EMOReference
from .speed import EMOSpeed

logger = logging.getLogger(__name__)

NODE = "EMO Sampler"
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF


def align_mask(mask: torch.Tensor, reference: EMOReference) -> torch.Tensor:
    """A MASK for the reference -> [H, W] in the prepared reference's pixels.

    A mask of the prepared (square) image is used as it is; a mask of the *source* image
    (before LoadReference cropped it) is cropped the same way (emo.runtime.reference.crop_mask);
    any other square mask is resized by the pipeline.
    """
    if mask.dim() == 3:
        if mask.shape[0] > 1:
            logger.info("%s: got %d face masks, using the first", NODE, mask.shape[0])
        mask = mask[0]
    if mask.dim() != 2 or mask.numel() == 0:
        raise ValueError(f"{NODE}: face_mask must be a MASK [B, H, W], got {tuple(mask.shape)}")
    mask = mask.float().cpu()
    height, width = mask.shape
    size = reference.size
    if (height, width) == (size, size):
        return mask
    source = (reference.info.get("source_height"), reference.info.get("source_width"))
    if (height, width) == source and "box" in reference.info:
        return crop_mask(mask, reference.info, size)
    if height == width:
        return mask  # the prepared image at another resolution; the pipeline resizes it
    raise ValueError(
        f"{NODE}: the face_mask is {width}x{height} but the reference is {size}x{size} (cropped from a "
        f"{source[1]}x{source[0]} image); make the mask from EMO Load Reference's image output"
    )


# Latent -> RGB without the VAE, for per-step previews: ComfyUI's factors for SD1.5 latents
# (comfy/latent_formats.py, class SD15, `latent_rgb_factors`: a linear approximation of what the
# SD VAE decodes, one row per latent channel, used by its Latent2RGB previewer). They apply to the
# scaled latents the UNet sees (VAE latents x 0.18215), which is what the pipeline denoises; EMO
# and Hallo use the SD1.5 VAE. The pipeline reports the current noisy latents, not ComfyUI's
# predicted x0, so early previews are grainier than KSampler's.
SD15_LATENT_RGB = (
    #   R        G        B
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def latent_preview(latents: torch.Tensor):
    """A clip's latents (1, 4, f, h, w) -> a PIL image (h x w) of its middle frame, as ComfyUI's
    Latent2RGB previewer makes them: a fixed 4x3 projection mapped from -1..1 to 0..1. Costs one
    tiny matmul and an (h, w, 3) copy to the CPU, not a VAE decode. None for latents with another
    channel count (not an SD latent space)."""
    if latents.dim() != 5 or latents.shape[1] != len(SD15_LATENT_RGB):
        return None
    frame = latents[0, :, latents.shape[2] // 2].float()  # (4, h, w)
    factors = torch.tensor(SD15_LATENT_RGB, device=frame.device)  # (4, 3)
    rgb = torch.einsum("chw,cr->hwr", frame, factors)  # (h, w, 3), about -1..1
    return to_pil((rgb + 1) / 2)


def _check_speed_range(speed: EMOSpeed, model: EMOModelHandle) -> None:
    config = model.model.config.speed
    if config is None:  # Hallo and EchoMimic have no speed layers: the input has no effect on them
        logger.info("%s: %s has no speed layers; the speed input is ignored", NODE, model.name)
        return
    low = min(c - r for c, r in zip(config.bucket_centers, config.bucket_radii))
    high = max(c + r for c, r in zip(config.bucket_centers, config.bucket_radii))
    outside = [v for v in speed.values() if not low <= v <= high]
    if outside:
        logger.warning("%s: speed %s is outside the range this checkpoint knows (%.2f-%.2f); motion may "
                       "be erratic", NODE, outside, low, high)


@dataclass
class SamplingRun:
    """One sampler run, checked and planned: `clips()` yields the frames clip by clip."""

    model: EMOModelHandle
    reference: EMOReference
    audio_features: AudioFeatures
    settings: GenerationSettings
    resolved: GenerationSettings
    mask: torch.Tensor | None
    speed: EMOSpeed | None
    info: dict  # the readout web/emo.js shows: frames, fps, seconds, clips
    node: str = NODE

    @property
    def total(self) -> int:
        return self.audio_features.num_frames

    @property
    def fps(self) -> float:
        return float(self.audio_features.fps)

    def clips(self):
        """The video's frames, (n, S, S, 3) float 0..1 per clip, with ComfyUI's progress bar,
        previews and Cancel; exactly `total` frames in all."""
        resolved, node = self.resolved, self.node
        steps, clips = resolved.steps, self.info["clips"]
        progress = services.Progress(progress_total(self.model.model, self.total, resolved))
        previews = services.latent_previews_enabled()

        def on_step(p) -> None:
            # Each step: the middle frame of the clip being denoised (noisy early, sharper later);
            # each finished clip below: its last decoded frame.
            shown = p.denoised if p.denoised is not None else p.latents  # clean estimate looks like the result
            preview = latent_preview(shown) if previews and shown is not None else None
            progress.update_absolute(p.done, preview_image=preview)

        def should_cancel() -> bool:
            services.check_interrupted()  # raises ComfyUI's own interrupt inside ComfyUI
            return False

        done = 0
        with self.model.loaded(self.reference.size, resolved.frames_per_clip) as pipeline:
            try:
                for chunk in pipeline.iter_clips(
                        self.reference.image, self.audio_features, face_mask=self.mask,
                        speed=None if self.speed is None else self.speed.for_pipeline(
                            self.total, self.fps,
                            audio=(self.audio_features.waveform, self.audio_features.sample_rate)),
                        settings=self.settings,
                        callback=on_step, should_cancel=should_cancel):
                    done += chunk.shape[0]
                    progress.update_absolute(progress.current, preview_image=to_pil(chunk[-1]))
                    yield chunk
            except FaceNotFoundError as error:
                raise ValueError(
                    f"{node}: no face found in the reference to place the face region; connect EMO Face Region "
                    "Mask (with its 'mask' override if detection fails there too) to the face_mask input"
                ) from error
            except ValueError as error:
                raise ValueError(f"{node}: {error}") from error
        if done != self.total:  # the pipeline promises exactly one frame per audio frame
            raise RuntimeError(f"{node}: the pipeline produced {done} frames for {self.total} audio frames")
        logger.info("%s: %d frames (%d clips of %d, %d steps, cfg %g) at %g fps", node, self.total, clips,
                    resolved.frames_per_clip, steps, resolved.guidance_scale, self.fps)


def start_sampling(model: EMOModelHandle, reference: EMOReference, audio_features: AudioFeatures, seed: int,
                   steps: int, cfg: float, scheduler: str, frames_per_clip: int, motion_frames: int,
                   face_mask: torch.Tensor | None = None, speed: EMOSpeed | None = None,
                   node_id: str | None = None, region_weights: tuple[float, float, float] | None = None,
                   node: str = NODE) -> SamplingRun:
    """Check the inputs and plan the run (nothing is computed yet). Widgets at their
    "checkpoint's own" values (steps 0, cfg -1, frames_per_clip 0, motion_frames -1) leave the
    setting to the checkpoint. region_weights: (pose, face, lip) audio weights of models with
    regional audio (None: the checkpoint's; ignored by the others)."""
    for name, value, expected, source in (
        ("model", model, EMOModelHandle, "EMO Load Checkpoint"),
        ("reference", reference, EMOReference, "EMO Load Reference"),
        ("audio_features", audio_features, AudioFeatures, "EMO Audio Encode"),
    ):
        if not isinstance(value, expected):
            raise ValueError(f"{node}: the {name} input must come from {source}, got {type(value).__name__}")
    if speed is not None and not isinstance(speed, EMOSpeed):
        raise ValueError(f"{node}: the speed input must come from EMO Speed Control, got {type(speed).__name__}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"{node}: unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    mask = align_mask(face_mask, reference) if face_mask is not None else reference.mask
    if speed is not None:
        _check_speed_range(speed, model)
    fps = audio_features.fps
    settings = GenerationSettings(size=reference.size, fps=fps, frames_per_clip=frames_per_clip or None,
                                  motion_frames=None if motion_frames < 0 else motion_frames,
                                  steps=steps or None, guidance_scale=None if cfg < 0 else cfg,
                                  seed=seed, scheduler=scheduler, region_scales=region_weights)
    try:
        resolved = settings.resolve(model.defaults)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from error
    info = readout(audio_features.num_frames, fps, audio_features.duration_seconds(),
                   num_clips(audio_features.num_frames, resolved.frames_per_clip))
    warning = size_warning(reference.size, model)
    if warning:
        info["warning"] = warning
        logger.warning("%s: %s", node, warning)
    services.send_ui_message("emo.plan", {"node": node_id, **info})
    return SamplingRun(model=model, reference=reference, audio_features=audio_features, settings=settings,
                       resolved=resolved, mask=mask, speed=speed, info=info, node=node)


def size_warning(size: int, model: EMOModelHandle) -> str | None:
    """The one-line note shown on the node when the reference is not the size the model was
    trained at (a user's choice, but rarely a good one)."""
    trained = model.defaults.size
    if size == trained:
        return None
    return (f"{model.name} was trained at {trained} px; at {size} px expect {'blur and drift' if size > trained else 'lost detail'}"
            f" (set EMO Load Reference's size to 0 for the model's own)")


def sample(*args, **kwargs) -> tuple[torch.Tensor, float, dict]:
    """EMOSampler's body: (frames [F, H, W, 3], fps, readout); arguments as `start_sampling`."""
    run = start_sampling(*args, **kwargs)
    # The IMAGE output is the one full copy of the video; clips are written into it as they come.
    size = run.reference.size
    frames = torch.empty(run.total, size, size, 3, dtype=torch.float32)
    done = 0
    for chunk in run.clips():
        frames[done:done + chunk.shape[0]] = chunk
        done += chunk.shape[0]
    return frames, run.fps, run.info


class EMOSampler:
    DESCRIPTION = (
        "Generates the talking or singing video: clip after clip of frames_per_clip frames, each "
        "continuing from the last motion_frames of the previous one, lips driven by the audio "
        "tokens, identity by the reference, head motion by the speed. Outputs IMAGE frames (for "
        "upscalers, interpolators, EMO Video Combine) and their frame rate."
    )
    CATEGORY = "EMO/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("frames", "fps")
    OUTPUT_TOOLTIPS = (
        "All video frames, one per audio frame.",
        "Their frame rate (the rate EMO Audio Encode used); connect it to EMO Video Combine's frame_rate.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL", {"tooltip": "From EMO Load Checkpoint."}),
                "reference": ("EMO_REFERENCE", {"tooltip": "The portrait, from EMO Load Reference."}),
                "audio_features": ("EMO_AUDIO", {
                    "tooltip": "Per-frame audio tokens from EMO Audio Encode; they fix the frame count and fps.",
                }),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                    "tooltip": "Noise seed; the same seed and inputs give the same video.",
                }),
                "steps": ("INT", {
                    "default": 0, "min": 0, "max": 200,
                    "tooltip": "Denoising steps per clip; 0 = the checkpoint's own (EMO and Hallo: 40; EchoMimic: "
                               "30, acc: 6; the demo model: 20). Time grows linearly.",
                }),
                "cfg": ("FLOAT", {
                    "default": -1.0, "min": -1.0, "max": 20.0, "step": 0.1, "round": 0.01,
                    "tooltip": "Classifier-free guidance on audio and reference; -1 = the checkpoint's own (EMO "
                               "and Hallo: 3.5; EchoMimic: 2.5, acc: 1.0; the demo model: 2.0); <= 1 turns it off (twice as fast). Higher "
                               "follows the lips/identity more strictly.",
                }),
                "scheduler": (list(SCHEDULERS), {
                    "default": "ddim",
                    "tooltip": "Diffusers scheduler. ddim is the paper's; dpmpp_2m and unipc reach similar "
                               "quality in fewer steps.",
                }),
                "frames_per_clip": ("INT", {
                    "default": 0, "min": 0, "max": 64,
                    "tooltip": "Frames generated together; 0 = the checkpoint's own (EMO: 12, Hallo: 16; EchoMimic: "
                               "its sampling window, 12). More is smoother but needs more memory.",
                }),
                "motion_frames": ("INT", {
                    "default": -1, "min": -1, "max": 32,
                    "tooltip": "Frames of the previous clip each clip continues from; -1 = the checkpoint's own "
                               "(EMO: 4, Hallo: 2; EchoMimic: its windows' overlap, 3); 0 makes clips independent (jumps at "
                               "clip borders).",
                }),
            },
            "optional": {
                "face_mask": ("MASK", {
                    "tooltip": "Where the face may move, from EMO Face Region Mask. Without it the face is "
                               "detected in the reference.",
                }),
                "speed": ("EMO_SPEED", {
                    "tooltip": "Head-motion speed from EMO Speed Control. Without it the checkpoint's default "
                               "(speech) is used.",
                }),
                **{f"{region}_weight": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": f"Hallo models only (ignored by EMO models): weight of the audio on the "
                               f"{label}. Hallo's default is 1.0 for pose, face and lip.",
                }) for region, label in (("pose", "background and head pose"), ("face", "face"),
                                         ("lip", "lips"))},
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(self, model, reference, audio_features, seed, steps, cfg, scheduler, frames_per_clip,
               motion_frames, face_mask=None, speed=None, pose_weight=1.0, face_weight=1.0, lip_weight=1.0,
               unique_id=None):
        frames, fps, info = sample(model, reference, audio_features, seed, steps, cfg, scheduler,
                                   frames_per_clip, motion_frames, face_mask, speed, node_id=unique_id,
                                   region_weights=(pose_weight, face_weight, lip_weight))
        return {"ui": {"emo_readout": [info]}, "result": (frames, fps)}
