"""Stage `vae`: train a small model's autoencoder on the dataset's frames.

Why this stage exists: EMO works in the latent space of a pretrained VAE (real models use
sd-vae-ft-mse, which `assemble --vae` loads), and that VAE stays frozen in stages 1-3. The `tiny`
and `demo` presets have no pretrained VAE to load - none that small exists, and this library never
downloads - so their random VAE cannot reconstruct a frame, and nothing trained on top of it could
show a face. This stage trains only `vae` (every other network is untouched) before stage 1:

    loss = L1(x̂, x) + MSE(x̂, x) + kl_weight * KL(q(z|x) || N(0, I))

on single frames (pixels in -1..1), decoding a *sample* of the posterior so the decoder learns to
tolerate latents that are slightly off (as the diffusion model's will be). The KL term is small, as
in Stable Diffusion's VAE (there 1e-6 with a perceptual and an adversarial loss; plain pixel losses
on drawn faces need neither). At the end the latents' spread is measured on dataset frames and the
VAE's `scaling_factor` set to 1 / std, so the scaled latents the diffusion model sees have unit
variance (SD's 0.18215 was found the same way for its VAE).

This stage is short (minutes on a CPU) and saves no resumable training state: an interrupted run
starts over. Its output checkpoint is the `init` of stage 1. Run it with the same command as the
other stages (`python -m emo train --config configs/train/demo_vae.yaml`).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..checkpoints import load_checkpoint, save_checkpoint
from ..data.layout import open_dataset
from .config import TrainConfig

logger = logging.getLogger(__name__)

STAGE = "vae"
METRICS_FIELDS = ("step", "loss", "l1", "mse", "kl", "lr", "seconds_per_step")


def _as_pixels(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 frames [S, S, 3] -> float32 [N, 3, S, S] in -1..1, the VAE's input range."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class FrameSampler:
    """Random single frames of a prepared dataset (stored frames): draw d is a pure function of
    (seed, d), as in emo/train/data.py."""

    def __init__(self, root, seed: int):
        self.dataset = open_dataset(root)
        if not self.dataset.has_frames:
            raise ValueError(f"stage vae: the dataset {self.dataset.root} stores no frames "
                             f"(store={self.dataset.info['store']}); prepare it with --store frames or both")
        self.dataset, problems = self.dataset.check_clips(("frames",))
        for problem in problems:
            logger.warning("not training on %s", problem)
        self.clips = [clip for clip in self.dataset.clips if clip.num_frames > 0]
        if not self.clips:
            raise ValueError(f"stage vae: the dataset {self.dataset.root} has no clips")
        self.counts = np.array([clip.num_frames for clip in self.clips])
        self.seed = int(seed)

    def batch(self, step: int, size: int, stream: int = 3) -> torch.Tensor:
        """float32 [size, 3, S, S] in -1..1 (`stream` 3: training draws, 4: measurement draws)."""
        rng = np.random.default_rng([self.seed, stream, int(step)])
        # Every frame equally likely: clip by frame count, then a frame of it.
        picks = rng.choice(len(self.clips), size=size, p=self.counts / self.counts.sum())
        frames = [np.array(self.dataset.array(self.clips[c], "frames")[rng.integers(0, self.counts[c])])
                  for c in picks]
        return _as_pixels(frames)


class SyntheticFrameSampler:
    """Frames of `emo.synthetic` faces rendered on the fly: identity seeds 0..count-1 (all below
    the held-out range), each frame at a random head tilt (within +-MAX_ANGLE, beyond the
    talkers'), mouth opening and eye openness. Draw d is a pure function of (seed, stream, d), like FrameSampler's.
    Rendering a 64-px face takes about a millisecond, so thousands of identities cost nothing to
    store; the identities are made lazily and kept (a few hundred bytes each)."""

    def __init__(self, count: int, size: int, seed: int):
        from .. import synthetic

        if count < 1:
            raise ValueError(f"stage vae: synthetic_identities must be >= 1, got {count}")
        if count > synthetic.EVALUATION_SEED_START:
            raise ValueError(f"stage vae: synthetic_identities {count} would reach the held-out seeds "
                             f"(>= {synthetic.EVALUATION_SEED_START}); use fewer")
        self.synthetic, self.count, self.size, self.seed = synthetic, int(count), int(size), int(seed)
        self.identities: dict[int, object] = {}

    def _identity(self, seed: int):
        if seed not in self.identities:
            self.identities[seed] = self.synthetic.make_identity(seed)
        return self.identities[seed]

    def batch(self, step: int, size: int, stream: int = 3) -> torch.Tensor:
        """float32 [size, 3, S, S] in -1..1."""
        rng = np.random.default_rng([self.seed, stream, int(step), 1])
        frames = []
        for _ in range(size):
            identity = self._identity(int(rng.integers(0, self.count)))
            angle = float(rng.uniform(-self.synthetic.MAX_ANGLE, self.synthetic.MAX_ANGLE))
            eyes = 1.0 if rng.random() < 0.7 else float(rng.random())
            frames.append(self.synthetic.render_frame(identity, self.size, angle, float(rng.random()), eyes))
        return _as_pixels(frames)


class MixedFrameSampler:
    """`share` of each batch from `extra` (rounded, at least one frame), the rest from `base`."""

    def __init__(self, base, extra, share: float):
        self.base, self.extra, self.share = base, extra, float(share)

    def batch(self, step: int, size: int, stream: int = 3) -> torch.Tensor:
        extra = min(size, max(1, round(size * self.share)))
        parts = [self.extra.batch(step, extra, stream)]
        if size > extra:
            parts.insert(0, self.base.batch(step, size - extra, stream))
        return torch.cat(parts)


def autoencoder_loss(vae, pixels: torch.Tensor, kl_weight: float, generator=None) -> dict[str, torch.Tensor]:
    """Reconstruction + KL of a batch of pixels [B, 3, S, S] in -1..1 (see the module docstring)."""
    posterior = vae.encode(pixels).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator)  # on the CPU: the same draws on any device
    latents = posterior.mean + posterior.std * noise.to(pixels.device)
    decoded = vae.decode(latents).sample
    l1 = F.l1_loss(decoded, pixels)
    mse = F.mse_loss(decoded, pixels)
    kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent value
    return {"loss": l1 + mse + kl_weight * kl, "l1": l1, "mse": mse, "kl": kl}


@torch.no_grad()
def latent_scaling_factor(vae, sampler: FrameSampler, batches: int = 8, size: int = 32) -> float:
    """1 / std of the latent means over `batches` x `size` dataset frames."""
    device = next(vae.parameters()).device
    values = [vae.encode(sampler.batch(i, size, stream=4).to(device)).latent_dist.mode().flatten()
              for i in range(batches)]
    return float(1.0 / torch.cat(values).std())


def train_autoencoder(config: TrainConfig, on_step: Callable[[dict], None] | None = None) -> Path:
    """Run stage `vae` of `config` (init, data.root, max_steps, batch_size, optimizer,
    autoencoder.kl_weight, output_dir, export_precision) and return the exported checkpoint."""
    config.validate()
    torch.manual_seed(config.seed)
    if not Path(config.init).is_file():
        raise FileNotFoundError(f"train config: init checkpoint {config.init} not found; create one with "
                                "`python -m emo new-checkpoint`")
    model = load_checkpoint(config.init, dtype=torch.float32)
    sampler = FrameSampler(config.data.root, config.seed)
    if config.data.size is not None and config.data.size != sampler.dataset.size:
        raise ValueError(f"train config: data.size is {config.data.size} but the dataset {sampler.dataset.root} "
                         f"was prepared at {sampler.dataset.size}")
    if sampler.dataset.size % model.config.latent_scale:
        raise ValueError(f"stage vae: dataset size {sampler.dataset.size} is not a multiple of the VAE's "
                         f"{model.config.latent_scale}")
    training_frames = sampler
    settings = config.autoencoder
    if settings.synthetic_identities:
        synthetic_frames = SyntheticFrameSampler(settings.synthetic_identities, sampler.dataset.size, config.seed)
        training_frames = MixedFrameSampler(sampler, synthetic_frames, settings.synthetic_share)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = model.vae.to(device).train().requires_grad_(True)
    opt = config.optimizer
    optimizer = torch.optim.AdamW(vae.parameters(), lr=opt.learning_rate, betas=tuple(opt.betas),
                                  weight_decay=opt.weight_decay, eps=opt.eps)
    from diffusers.optimization import get_scheduler

    schedule = get_scheduler(opt.lr_scheduler, optimizer, num_warmup_steps=opt.lr_warmup_steps,
                             num_training_steps=config.max_steps)
    output = Path(config.output_dir)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    (output / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    log_path = output / "logs" / "metrics.csv"
    with open(log_path, "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=METRICS_FIELDS).writeheader()
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(1, config.max_steps + 1):
        started = time.perf_counter()
        losses = autoencoder_loss(vae, training_frames.batch(step, config.batch_size).to(device),
                                  config.autoencoder.kl_weight, generator)
        losses["loss"].backward()
        if opt.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), opt.max_grad_norm)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {"step": step, **{k: round(float(v.detach()), 6) for k, v in losses.items()}, "lr": lr,
                   "seconds_per_step": round(time.perf_counter() - started, 4)}
        if step % config.logging.every == 0 or step in (1, config.max_steps):
            with open(log_path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=METRICS_FIELDS).writerow(metrics)
        if on_step is not None:
            on_step(metrics)
    vae.eval().requires_grad_(False)
    scale = latent_scaling_factor(vae, sampler)
    # Both copies: the diffusers config (used now) and the EMO config (saved in the checkpoint).
    vae.register_to_config(scaling_factor=scale)
    model.config.vae["scaling_factor"] = scale
    model.vae.to("cpu")
    path = output / "emo-stage-vae.safetensors"
    dtype = None if config.export_precision == "fp32" else config.export_precision
    save_checkpoint(model, path, dtype=dtype,
                    description=f"EMO stage vae (autoencoder only), step {config.max_steps}, batch "
                                f"{config.batch_size}, data {sampler.dataset.root.name}"
                                + (f" + {settings.synthetic_identities} synthetic identities"
                                   if settings.synthetic_identities else "")
                                + f"; latent scaling {scale:.4f}")
    logger.info("stage vae: latent scaling factor %.4f", scale)
    return path
