"""Training samples from a prepared dataset, for each stage.

A sample is a pure function of (seed, draw number): the clip window, the reference frame, the
noise, the timestep and the condition dropout all come from a generator seeded with both. Two
things follow: a resumed run that skips the draws already made continues bit-identically (no
data-loader state to save), and N processes that split each global batch by draw number see
exactly the samples one process would (so their averaged gradients match).

Draws are numbered 0, 1, 2, ...; draw d belongs to epoch d // W (W windows) and takes window
permutation(epoch)[d % W]. A window is `n + f` consecutive frames of one clip (stage 1: one frame),
windows tile each clip with a random offset inside their stride. The reference frame is another
frame of the same clip (same video, same crop; paper §3.3 draws it from the same video clip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .. import audio as audio_lib
from ..data.layout import PreparedDataset
from ..faces.boxes import grow_box
from .config import DropoutConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    frames: int  # f, frames denoised per sample (stage 1: 1)
    motion_frames: int  # n (stage 1: 0)
    audio: bool  # load audio windows (stages 2, 3)
    speed: bool  # load per-frame speeds (stage 3)
    latents: bool  # stored VAE latents (True) or pixels to encode on the fly (False)
    window_radius: int  # m, audio frames on each side (model config)
    num_train_timesteps: int  # from the model's noise schedule
    latent_scale: int  # pixels per latent cell
    dropout: DropoutConfig
    face_mask_margin: tuple[float, float] = (0.0, 0.0)  # see DataConfig.face_mask_margin
    face_mask_boxes: str = "clip"  # see DataConfig.face_mask_boxes
    latent_channels: int = 4

    @property
    def span(self) -> int:
        return self.motion_frames + self.frames


def union_box_mask(boxes: np.ndarray, size: int, margin: float = 0.0) -> torch.Tensor:
    """Face-region mask (1, S, S): the union of the boxes (EMO's face locator input), grown by
    `margin` times its width and height on each side."""
    (x0, y0), (x1, y1) = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    x0, y0, x1, y1 = grow_box((x0, y0, x1, y1), margin)
    mask = torch.zeros(1, size, size)
    mask[:, max(y0, 0):min(y1, size), max(x0, 0):min(x1, size)] = 1.0
    return mask


class TrainingSamples(Dataset):
    """`samples[d]` is draw d (any d >= 0); see the module docstring."""

    def __init__(self, dataset: PreparedDataset, spec: SampleSpec, seed: int):
        self.dataset = dataset
        self.spec = spec
        self.seed = int(seed)
        span = spec.span
        self.windows = [(index, start) for index, clip in enumerate(dataset.clips)
                        for start in range(0, clip.num_frames - span + 1, span)]
        short = sum(clip.num_frames < span for clip in dataset.clips)
        if short:
            logger.info("%d of %d clips are shorter than %d frames and are not used", short, len(dataset.clips), span)
        if not self.windows:
            raise ValueError(f"dataset {dataset.root} has no clip with at least {span} frames (n + f = "
                             f"{spec.motion_frames} + {spec.frames}); prepare longer videos or lower "
                             "data.frames_per_clip / data.motion_frames")
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        """Windows per epoch (draws go on past it)."""
        return len(self.windows)

    def window_of(self, draw: int) -> tuple[int, int]:
        epoch, position = divmod(int(draw), len(self.windows))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.windows)))
        return self.windows[self._order[1][position]]

    def _mask_margin(self, rng: np.random.Generator) -> float:
        low, high = self.spec.face_mask_margin
        return float(rng.uniform(low, high)) if high > 0 else 0.0  # no draw: unchanged streams

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        spec, data = self.spec, self.dataset
        rng = np.random.default_rng([self.seed, 2, int(draw)])
        clip_index, base = self.window_of(draw)
        clip = data.clips[clip_index]
        span = spec.span
        # Random offset inside the window's stride, staying inside the clip.
        start = base + int(rng.integers(0, min(span, clip.num_frames - span - base + 1)))
        first = start + spec.motion_frames  # first denoised frame
        end = start + span
        if spec.frames == 1 and clip.num_frames > 1:  # stage 1: another frame of the same clip
            reference = int(rng.integers(0, clip.num_frames - 1))
            reference += reference >= first
        else:
            reference = int(rng.integers(0, clip.num_frames))

        mask_frames = slice(first, end) if spec.face_mask_boxes == "clip" else slice(reference, reference + 1)
        source = "latents" if spec.latents else "frames"
        images = data.array(clip, source)
        window = torch.from_numpy(np.array(images[start:end]))
        sample = {
            "draw": torch.tensor(int(draw)),
            "reference": torch.from_numpy(np.array(images[reference])),
            "motion": window[:spec.motion_frames],
            "target": window[spec.motion_frames:],
            "face_mask": union_box_mask(np.asarray(data.array(clip, "boxes")[mask_frames]), data.size,
                                        margin=self._mask_margin(rng)),
        }
        if spec.latents:
            for key in ("reference", "motion", "target"):
                sample[key] = sample[key].float()
        if spec.audio:
            m = spec.window_radius
            features = data.array(clip, "audio")
            lo, hi = max(0, first - m), min(clip.num_frames, end + m)
            piece = torch.from_numpy(np.asarray(features[lo:hi], dtype=np.float32))
            sample["audio"] = audio_lib.window(piece, torch.arange(first - lo, end - lo), m)  # (f, 2m+1, L, D)
        if spec.speed:
            sample["speed"] = torch.from_numpy(np.array(data.array(clip, "speed")[start:end], dtype=np.float32))

        h = data.size // spec.latent_scale
        sample["noise"] = torch.from_numpy(
            rng.standard_normal((spec.latent_channels, spec.frames, h, h), dtype=np.float32))
        sample["timestep"] = torch.tensor(int(rng.integers(0, spec.num_train_timesteps)))
        drop = spec.dropout
        # One uniform draw picks at most one case: [0, a) audio, [a, a+r) reference, [a+r, a+r+b) both.
        r = rng.random()
        audio_end, reference_end = drop.audio, drop.audio + drop.reference
        both_end = reference_end + drop.both
        sample["drop_audio"] = torch.tensor(bool(r < audio_end or reference_end <= r < both_end))
        sample["drop_reference"] = torch.tensor(bool(audio_end <= r < both_end))
        sample["drop_motion"] = torch.tensor(bool(rng.random() < drop.motion_frames))
        return sample


class DrawBatches(Sampler):
    """This process's share of each global micro-batch: micro-step s covers draws
    [s * G, (s + 1) * G) with G = micro_batch * num_processes, and process p takes the p-th slice."""

    def __init__(self, micro_batch: int, num_processes: int, process_index: int, first_step: int, last_step: int):
        self.micro_batch = micro_batch
        self.num_processes = num_processes
        self.process_index = process_index
        self.first_step = first_step
        self.last_step = last_step

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step)

    def __iter__(self):
        size = self.micro_batch * self.num_processes
        for step in range(self.first_step, self.last_step):
            base = step * size + self.process_index * self.micro_batch
            yield list(range(base, base + self.micro_batch))
