"""The training loop on accelerate: one GPU, many GPUs, many nodes (DDP), same code.

    trainer = Trainer(load_train_config("configs/train/stage2.yaml"))
    trainer.setup()            # model, stage, data, optimiser, resume
    path = trainer.train()     # steps, logs, training states, sample videos; returns the final checkpoint

Run with `python -m emo train --config ...` (one process) or `accelerate launch -m emo train
--config ...` (several). Batches: `batch_size` samples per optimizer step in all, split into
`gradient_accumulation_steps` micro-steps and over the processes; the data order depends only on
the seed (emo/train/data.py), so a run gives the same samples on 1 or N processes.

Output folder:
    train_config.yaml               the resolved config
    checkpoints/step-0001000/       accelerate training state (weights, optimiser, RNG, LR schedule,
                                    EMA, step) for exact resume; these are local, trusted files
                                    (accelerate pickles optimiser and RNG states)
    logs/metrics.csv                step, loss, lr, grad_norm, ... (+ TensorBoard when installed)
    samples/step-0001000.mp4        sample videos
    emo-stage{N}.safetensors        the final model, the single-file EMO checkpoint the nodes load
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from ..checkpoints import load_checkpoint, save_checkpoint
from ..data.head_speed import compute_speed_buckets
from ..data.layout import PreparedDataset, open_dataset
from ..model import EMOModel
from .config import TrainConfig
from .data import DrawBatches, SampleSpec, TrainingSamples, union_box_mask
from .ema import EMA
from .objective import DenoisingObjective
from .stages import Stage, resolve_stage, select_trainable

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainingProgress:
    """The step counter, saved with every training state; the data position follows from it.
    `trainable` guards against resuming a state written for other parameters."""

    step: int = 0
    trainable: list[str] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"step": self.step, "trainable": list(self.trainable)}

    def load_state_dict(self, state: dict) -> None:
        if state["trainable"] != self.trainable:
            raise ValueError("the training state to resume was written for other trainable parameters (another "
                             "stage or `trainable:` list); use a new output_dir or checkpoints.resume: never")
        self.step = int(state["step"])


class MetricsLog:
    """logs/metrics.csv, plus accelerate's trackers (TensorBoard) when enabled. On resume, rows
    after the resumed step (written by the interrupted run) are dropped, so the file reads as one run."""

    FIELDS = ("step", "loss", "lr", "grad_norm", "seconds_per_step", "samples_per_second")

    def __init__(self, path: Path, resume_step: int, accelerator):
        self.path = path
        self.accelerator = accelerator
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.is_file() and resume_step > 0:
            with open(path, newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, values: dict) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.FIELDS).writerow({k: values.get(k) for k in self.FIELDS})
        self.accelerator.log({f"train/{k}": v for k, v in values.items() if k != "step" and v is not None},
                             step=values["step"])


def _tensorboard(setting) -> bool:
    available = importlib.util.find_spec("tensorboard") is not None
    if setting is True and not available:
        raise ValueError("train config: logging.tensorboard is true but TensorBoard is not installed; "
                         "pip install tensorboard, or set it to auto")
    return setting is True or (setting == "auto" and available)


def make_accelerator(config: TrainConfig, stage: Stage):
    """An Accelerator for this run (DDP when launched on several processes)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # A trained ReferenceNet gets no gradient when every row of a process's batch drops the
    # reference; DDP must then be told that parameters may go unused.
    drops_reference = config.dropout.reference + config.dropout.both > 0
    ddp = DistributedDataParallelKwargs(find_unused_parameters=stage.trains("reference_net") and drops_reference,
                                        broadcast_buffers=False)
    output = Path(config.output_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # Launched as several processes on a machine without GPUs: only DDP on the CPU (gloo) can
    # work, which accelerate picks only when asked for the CPU.
    cpu = world > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if _tensorboard(config.logging.tensorboard) else None,
        project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
        kwargs_handlers=[ddp],
    )
    if accelerator.num_processes != world:
        raise ValueError(f"train: launched as {world} processes but accelerate set up {accelerator.num_processes}; "
                         "check the launch command (accelerate launch --multi_gpu --num_processes N ...)")
    return accelerator


class Trainer:
    def __init__(self, config: TrainConfig, accelerator=None):
        self.config = config.validate()
        self.stage = resolve_stage(config.stage, config.trainable)
        if config.optimizer.name == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("optimizer.name adamw8bit needs bitsandbytes (pip install bitsandbytes; CUDA only); "
                             "or use adamw")
        self.accelerator = accelerator if accelerator is not None else make_accelerator(config, self.stage)
        self._micro_batch = self._micro_batch_size()
        self.output_dir = Path(config.output_dir)
        self.progress = TrainingProgress()
        self.ema: EMA | None = None
        self.notes: list[str] = []  # what setup did, for the command to print
        self._ready = False

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self) -> "Trainer":
        from accelerate.utils import set_seed

        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        if not Path(cfg.init).is_file():
            raise FileNotFoundError(f"train config: init checkpoint {cfg.init} not found; create one with "
                                    "`python -m emo new-checkpoint` (or use a previous stage's output)")
        self.dataset: PreparedDataset = open_dataset(cfg.data.root)
        if cfg.data.size is not None and cfg.data.size != self.dataset.size:
            raise ValueError(f"train config: data.size is {cfg.data.size} but the dataset {self.dataset.root} was "
                             f"prepared at {self.dataset.size}; prepare it again with --size {cfg.data.size}, or "
                             "drop data.size")
        self.model: EMOModel = load_checkpoint(cfg.init, dtype=torch.float32)
        if self.model.config.family != "emo":
            raise ValueError(f"{cfg.init} is a {self.model.family.description} model; training supports EMO models "
                             "only (other families need conditions this dataset does not hold, e.g. Hallo's face "
                             "embeddings and region masks)")
        resume = self._resume_path()
        if cfg.motion_module and resume is None:
            from ..weights.components import load_components

            report = load_components(self.model, motion_module=cfg.motion_module)
            self.notes.append(f"temporal modules: {report.summary()}")
        self.spec = self._sample_spec()
        arrays = ("latents" if self.spec.latents else "frames", "boxes") + (("audio",) if self.spec.audio else ()) + \
            (("speed",) if self.spec.speed else ())
        self.dataset, problems = self.dataset.check_clips(arrays)
        for problem in problems:
            logger.warning("not training on %s", problem)
        if problems:
            self.notes.append(f"{len(problems)} clip(s) left out (unreadable or inconsistent files; see the log)")
        if cfg.sampling.every and not 0 <= cfg.sampling.clip < len(self.dataset.clips):
            raise ValueError(f"train config: sampling.clip {cfg.sampling.clip} is out of range; the dataset has "
                             f"{len(self.dataset.clips)} clips")
        if self.stage.trains("speed_encoder") and cfg.data.speed_buckets == "dataset":
            self._use_dataset_speed_buckets()
        self._record_training_defaults()

        trainable = select_trainable(self.model, self.stage)
        for unet in (self.model.reference_net, self.model.backbone):
            unet.gradient_checkpointing = cfg.gradient_checkpointing
        objective = DenoisingObjective(self.model, self.stage).to(acc.device)
        unreached = self._unreached_parameters(objective, trainable)
        for name in unreached:
            trainable.pop(name).requires_grad_(False)
        if unreached:
            self.notes.append(f"{len(unreached)} tensors of these groups never reach the loss and stay frozen")
            logger.info("%d parameter tensors of the trained groups take no part in the loss and stay frozen "
                        "(e.g. %s)", len(unreached), ", ".join(unreached[:3]))
        if not trainable:
            raise ValueError(f"stage {cfg.stage}: no parameter of groups {self.stage.groups} affects the loss")
        self.trainable = trainable
        self.progress.trainable = sorted(trainable)
        self.notes.append(f"training {sum(p.numel() for p in trainable.values()) / 1e6:.2f} M parameters in "
                          f"{len(trainable)} tensors of {', '.join(self.stage.groups)} on {acc.num_processes} "
                          f"process(es), {self._micro_batch} sample(s) per micro-batch")

        self.optimizer = self._make_optimizer(list(trainable.values()))
        from diffusers.optimization import get_scheduler

        # Stepped once per optimizer step by us (accelerate's wrapper would step it once per process).
        self.lr_scheduler = get_scheduler(cfg.optimizer.lr_scheduler, self.optimizer,
                                          num_warmup_steps=cfg.optimizer.lr_warmup_steps,
                                          num_training_steps=cfg.max_steps)
        self.objective, self.optimizer = acc.prepare(objective, self.optimizer)
        # The VAE stays in float32 (it is exported as loaded); it encodes under autocast.
        self.model.vae.to(acc.device).requires_grad_(False)
        checkpointed = [self.lr_scheduler, self.progress]
        if cfg.ema.enabled:
            self.ema = EMA(trainable, cfg.ema.decay)
            checkpointed.append(self.ema)
        acc.register_for_checkpointing(*checkpointed)

        if resume is not None:
            self._check_resumable(resume)
            acc.load_state(str(resume))
            self.notes.append(f"resumed from {resume} at step {self.progress.step}")
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.metrics = MetricsLog(self.output_dir / "logs" / "metrics.csv", self.progress.step, acc)
            acc.init_trackers(f"emo-stage{cfg.stage}")
        self._ready = True
        return self

    def _sample_spec(self) -> SampleSpec:
        cfg, data, model = self.config, self.dataset, self.model
        multiple = model.config.latent_scale * model.backbone.min_latent_multiple
        if data.size % multiple:
            raise ValueError(f"dataset size {data.size} must be a multiple of {multiple} for this model")
        audio = data.info["audio"]
        encoder = model.config.audio
        if (audio["num_layers"], audio["hidden_size"]) != (encoder.num_layers, encoder.hidden_size):
            raise ValueError(f"dataset {data.root} holds wav2vec2 features of {audio['num_layers']} layers x "
                             f"{audio['hidden_size']} but the model's encoder has {model.config.audio.num_layers} x "
                             f"{model.config.audio.hidden_size}; prepare the data with this model's checkpoint")
        from ..data.encoders import fingerprint

        if self.stage.uses_audio and audio["encoder_fingerprint"] != fingerprint(model.audio_encoder):
            raise ValueError(f"dataset {data.root} was prepared with another wav2vec2 than the one in {cfg.init}; its "
                             "audio features would not match what the model sees at inference. Prepare the data "
                             "with the checkpoint you train from (`python -m emo prepare --checkpoint ...`)")
        latents = data.has_latents if cfg.data.use_latents == "auto" else cfg.data.use_latents
        if latents:
            vae = data.info.get("vae")
            if not data.has_latents:
                raise ValueError(f"data.use_latents is true but {data.root} stores no latents "
                                 f"(store={data.info['store']})")
            if vae is None or vae["fingerprint"] != fingerprint(model.vae):
                if cfg.data.use_latents is True or not data.has_frames:
                    raise ValueError(f"the latents in {data.root} were made by another VAE than the one in {cfg.init}; "
                                     "prepare the data again with this checkpoint")
                logger.warning("the dataset's latents come from another VAE; encoding its frames on the fly instead")
                latents = False
        elif not data.has_frames:
            raise ValueError(f"data.use_latents is false but {data.root} stores no frames (store={data.info['store']})")
        video = self.stage.uses_video
        return SampleSpec(
            frames=cfg.data.frames_per_clip if video else 1,
            motion_frames=cfg.data.motion_frames if video else 0,
            audio=self.stage.uses_audio, speed=self.stage.uses_speed, latents=latents,
            window_radius=model.config.audio.window_radius,
            num_train_timesteps=int(model.config.scheduler["num_train_timesteps"]),
            latent_scale=model.config.latent_scale, dropout=cfg.dropout,
            face_mask_margin=tuple(cfg.data.face_mask_margin), face_mask_boxes=cfg.data.face_mask_boxes,
        )

    def _use_dataset_speed_buckets(self) -> None:
        """Stage 3: the speed buckets come from the training data's statistics (paper §3.2)."""
        speed = self.model.config.speed
        count = len(speed.bucket_centers)
        stored = self.dataset.info.get("speed_buckets")
        if stored is not None and len(stored["centers"]) == count:
            centres, radii = stored["centers"], stored["radii"]
        else:
            centres, radii = compute_speed_buckets(self.dataset.all_speeds(), count)
        speed.bucket_centers, speed.bucket_radii = tuple(centres), tuple(radii)
        encoder = self.model.speed_encoder
        encoder.bucket_centers.copy_(torch.tensor(centres))
        encoder.bucket_radii.copy_(torch.tensor(radii))
        logger.info("speed buckets from the dataset: centres %s, radii %s", centres, radii)

    def _record_training_defaults(self) -> None:
        """The exported model's inference defaults become what it was trained with (size; in the
        video stages also fps, f and n; in stage 3 the dataset's median speed): the pipeline uses
        them when the user does not say otherwise."""
        cfg, data = self.config, self.dataset
        changes: dict = {"size": data.size}
        if self.stage.uses_video:
            changes.update(fps=data.fps, frames_per_clip=cfg.data.frames_per_clip,
                           motion_frames=cfg.data.motion_frames)
        if self.stage.trains("speed_encoder") and cfg.data.speed_buckets == "dataset" and data.clips:
            changes["speed"] = round(float(np.median(data.all_speeds())), 4)
        self.model.config.defaults = dataclasses.replace(self.model.config.defaults, **changes)

    def _probe_batch(self, device) -> dict[str, torch.Tensor]:
        """A one-sample batch with every condition on, at the smallest size the model takes."""
        model, spec = self.model, self.spec
        h = model.backbone.min_latent_multiple
        f = 1 if not self.stage.uses_video else 2
        n = 0 if not self.stage.uses_video else min(1, spec.motion_frames)
        g = torch.Generator().manual_seed(0)
        audio = model.config.audio
        batch = {
            "target": torch.randn(1, f, 4, h, h, generator=g), "reference": torch.randn(1, 4, h, h, generator=g),
            "motion": torch.randn(1, n, 4, h, h, generator=g),
            "face_mask": torch.ones(1, 1, h * model.config.latent_scale, h * model.config.latent_scale),
            "noise": torch.randn(1, 4, f, h, h, generator=g), "timestep": torch.tensor([500]),
            "drop_audio": torch.tensor([False]), "drop_reference": torch.tensor([False]),
            "drop_motion": torch.tensor([False]),
            "audio": torch.randn(1, f, 2 * audio.window_radius + 1, audio.num_layers, audio.hidden_size, generator=g),
            "speed": torch.rand(1, n + f, generator=g),
        }
        return {k: v.to(device) for k, v in batch.items()}

    def _unreached_parameters(self, objective: DenoisingObjective, trainable: dict) -> list[str]:
        """Names of trainable tensors that get no gradient at all on a batch with every condition on
        (e.g. the ReferenceNet's output layers, which it never runs). Freezing them keeps DDP from
        waiting for gradients that never come and the optimiser from holding state for them."""
        loss = objective(self._probe_batch(self.accelerator.device))
        loss.backward()
        unreached = sorted(name for name, p in trainable.items() if p.grad is None)
        for param in trainable.values():
            param.grad = None
        return unreached

    def _make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        opt = self.config.optimizer
        kwargs = dict(lr=opt.learning_rate, betas=tuple(opt.betas), weight_decay=opt.weight_decay, eps=opt.eps)
        if opt.name == "adamw8bit":  # availability checked in __init__
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit(params, **kwargs)
        return torch.optim.AdamW(params, **kwargs)

    def _micro_batch_size(self) -> int:
        cfg, acc = self.config, self.accelerator
        parts = acc.num_processes * cfg.gradient_accumulation_steps
        if cfg.batch_size % parts:
            raise ValueError(f"train config: batch_size {cfg.batch_size} must be divisible by processes x "
                             f"gradient_accumulation_steps = {acc.num_processes} x {cfg.gradient_accumulation_steps}")
        return cfg.batch_size // parts

    def _check_resumable(self, state: Path) -> None:
        """A training state holds optimiser moments for one set of parameters: refuse one written for
        another stage or trainable list (clear message instead of a tensor-size error)."""
        saved_file = state / "train_config.yaml"
        if not saved_file.is_file():
            return
        saved = yaml.safe_load(saved_file.read_text()) or {}
        groups = resolve_stage(saved.get("stage", self.config.stage), saved.get("trainable")).groups
        if saved.get("stage") != self.config.stage or groups != self.stage.groups:
            raise ValueError(f"{state} is a stage {saved.get('stage')} state training {', '.join(groups)}; this run is "
                             f"stage {self.config.stage} training {', '.join(self.stage.groups)}. Use another "
                             "output_dir, or checkpoints.resume: never to start over")

    def _resume_path(self) -> Path | None:
        setting = self.config.checkpoints.resume
        if setting == "never":
            return None
        if setting == "auto":
            states = self._saved_states()
            return states[-1] if states else None
        path = Path(setting)
        if not path.is_dir():
            raise FileNotFoundError(f"train config: checkpoints.resume {path} is not a training state folder "
                                    f"(look in {self.output_dir / CHECKPOINTS_DIR})")
        return path

    # ---- data ----------------------------------------------------------------------------------
    def batches(self):
        """This process's micro-batches from the current step to the end of training."""
        cfg, acc = self.config, self.accelerator
        accumulation = cfg.gradient_accumulation_steps
        sampler = DrawBatches(self._micro_batch, acc.num_processes, acc.process_index,
                              first_step=self.progress.step * accumulation, last_step=cfg.max_steps * accumulation)
        samples = TrainingSamples(self.dataset, self.spec, cfg.seed)
        workers = cfg.data.num_workers
        return iter(DataLoader(samples, batch_sampler=sampler, num_workers=workers,
                               pin_memory=acc.device.type == "cuda", persistent_workers=False,
                               prefetch_factor=2 if workers else None))

    @torch.no_grad()
    def batch_to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a batch to the device and, when it holds pixels, VAE-encode them to latents."""
        device = self.accelerator.device
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if not self.spec.latents:
            b = batch["target"].shape[0]
            n, f = batch["motion"].shape[1], batch["target"].shape[1]
            pixels = torch.cat([batch["reference"][:, None], batch["motion"], batch["target"]], dim=1)
            latents = self.encode_pixels(pixels.flatten(0, 1)).unflatten(0, (b, 1 + n + f))
            batch["reference"], batch["motion"] = latents[:, 0], latents[:, 1:1 + n]
            batch["target"] = latents[:, 1 + n:]
        return batch

    def encode_pixels(self, pixels: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """uint8 [N, S, S, 3] -> scaled VAE latents [N, 4, S/8, S/8] float32 (the latent mean, as
        `emo prepare` stores them)."""
        vae = self.model.vae
        out = []
        with self.accelerator.autocast():
            for i in range(0, pixels.shape[0], chunk):
                x = pixels[i:i + chunk].permute(0, 3, 1, 2).float() / 127.5 - 1.0
                out.append(vae.encode(x).latent_dist.mode().float() * vae.config.scaling_factor)
        return torch.cat(out)

    # ---- steps ---------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective(self.batch_to_device(batch))

    def optimizer_step(self, micro_batches) -> dict:
        """One optimizer step over `gradient_accumulation_steps` micro-batches; returns the metrics."""
        acc, cfg = self.accelerator, self.config
        accumulation = cfg.gradient_accumulation_steps
        total = torch.zeros((), device=acc.device)
        for index in range(accumulation):
            batch = next(micro_batches)
            # Gradients are all-reduced only on the last micro-step.
            sync = contextlib.nullcontext() if index == accumulation - 1 else acc.no_sync(self.objective)
            with sync:
                loss = self.loss(batch)
                acc.backward(loss / accumulation)
            total += loss.detach()
        grad_norm = None
        if cfg.optimizer.max_grad_norm:
            grad_norm = acc.clip_grad_norm_(list(self.trainable.values()), cfg.optimizer.max_grad_norm)
        lr = self.lr_scheduler.get_last_lr()[0]  # the rate this step uses
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.progress.step += 1
        loss = acc.reduce(total / accumulation, reduction="mean")
        return {"step": self.progress.step, "loss": float(loss),
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm)}

    def train(self, should_stop: Callable[[], bool] | None = None,
              on_step: Callable[[dict], None] | None = None) -> Path | None:
        """Train to `max_steps`; save training states, logs and samples on the way; export the final
        checkpoint and return its path. `should_stop()` (e.g. set by SIGTERM on a preemptible
        machine) ends the run early after saving a training state; then the return is None."""
        if not self._ready:
            self.setup()
        cfg, acc = self.config, self.accelerator
        self.objective.train()
        micro_batches = self.batches()
        samples_per_step = cfg.batch_size
        while self.progress.step < cfg.max_steps:
            started = time.perf_counter()
            metrics = self.optimizer_step(micro_batches)
            seconds = time.perf_counter() - started
            step = self.progress.step
            metrics.update(seconds_per_step=round(seconds, 4), samples_per_second=round(samples_per_step / seconds, 3))
            if acc.is_main_process and (step % cfg.logging.every == 0 or step == cfg.max_steps or step == 1):
                self.metrics.write(metrics)
            if on_step is not None:
                on_step(metrics)
            last = step == cfg.max_steps
            stop = self._collective_flag(should_stop() if should_stop is not None else False)
            if last or stop or (cfg.checkpoints.every and step % cfg.checkpoints.every == 0):
                self.save_state()
            if acc.is_main_process and cfg.sampling.every and (step % cfg.sampling.every == 0 or last):
                self.sample_video(self.output_dir / "samples" / f"step-{step:07d}.mp4")
            acc.wait_for_everyone()
            if stop and not last:
                logger.info("stopped at step %d after saving a training state", step)
                acc.end_training()
                return None
        path = self.export()
        acc.end_training()
        return path

    def _collective_flag(self, flag: bool) -> bool:
        """True on every process if it is true on any (all must stop at the same step)."""
        if self.accelerator.num_processes == 1:
            return bool(flag)
        value = torch.tensor(float(flag), device=self.accelerator.device)
        return bool(self.accelerator.reduce(value, reduction="sum") > 0)

    # ---- outputs -------------------------------------------------------------------------------
    def save_state(self) -> Path:
        """Save the full training state (all processes must call this). It is written under a
        temporary name and renamed when complete, so a run killed while saving never leaves a
        half-written state for `resume: auto` to pick."""
        acc = self.accelerator
        path = self.output_dir / CHECKPOINTS_DIR / f"step-{self.progress.step:07d}"
        partial = path.with_name(path.name + ".partial")
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()  # every process has written its part (RNG states are per process)
        if acc.is_main_process:
            (partial / "train_config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            shutil.rmtree(path, ignore_errors=True)
            partial.rename(path)
            for old in self._saved_states()[:-self.config.checkpoints.keep]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return path

    def _saved_states(self) -> list[Path]:
        """Complete training states in output_dir, oldest first."""
        folder = self.output_dir / CHECKPOINTS_DIR
        return sorted(p for p in folder.glob("step-*") if p.is_dir() and p.name[5:].isdigit())

    def _weights(self):
        """Context: the weights to publish (EMA when enabled and exported)."""
        if self.ema is not None and self.config.ema.export:
            return self.ema.swapped_in()
        return contextlib.nullcontext()

    def export(self) -> Path:
        """Write the single-file EMO checkpoint (main process) and return its path."""
        acc, cfg = self.accelerator, self.config
        path = self.output_dir / f"emo-stage{cfg.stage}.safetensors"
        if acc.is_main_process:
            with self._weights():
                dtype = None if cfg.export_precision == "fp32" else cfg.export_precision
                description = (f"EMO stage {cfg.stage} ({', '.join(self.stage.groups)}), step {self.progress.step}, "
                               f"batch {cfg.batch_size}, data {self.dataset.root.name}")
                save_checkpoint(self.model, path, dtype=dtype, description=description)
        acc.wait_for_everyone()
        return path

    def sample_video(self, path: Path) -> Path:
        """Generate a short video with the current weights from one dataset clip's reference frame,
        audio, face box (and speeds in stage 3), and write it with its sound."""
        from ..audio import AudioFeatures, TARGET_SAMPLE_RATE
        from ..pipeline import EMOPipeline, GenerationSettings
        from ..video import write_video

        cfg, data = self.config, self.dataset
        clip = data.clips[cfg.sampling.clip]
        count = min(cfg.sampling.num_frames, clip.num_frames)
        if data.has_frames:
            reference = torch.from_numpy(np.array(data.array(clip, "frames")[0])).float() / 255
        else:
            with torch.no_grad():
                latent = torch.from_numpy(np.array(data.array(clip, "latents")[:1])).to(self.accelerator.device)
                vae = self.model.vae
                image = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample.float()
            reference = ((image[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).cpu()
        mask_frames = count if cfg.data.face_mask_boxes == "clip" else 1  # the reference is frame 0
        mask = union_box_mask(np.asarray(data.array(clip, "boxes")[:mask_frames]), data.size)[0]
        features = torch.from_numpy(np.array(data.array(clip, "audio")[:count], dtype=np.float32))
        samples = int(round(count / data.fps * TARGET_SAMPLE_RATE))
        waveform = torch.from_numpy(np.array(data.array(clip, "waveform")[:samples]))[None]
        audio = AudioFeatures(features=features, fps=data.fps, waveform=waveform, sample_rate=TARGET_SAMPLE_RATE)
        speed = torch.from_numpy(np.array(data.array(clip, "speed")[:count])) if self.stage.uses_speed else None
        settings = GenerationSettings(size=data.size, fps=data.fps, steps=cfg.sampling.steps,
                                      guidance_scale=cfg.sampling.guidance_scale, seed=cfg.sampling.seed,
                                      frames_per_clip=cfg.data.frames_per_clip, motion_frames=cfg.data.motion_frames)
        modes = {name: module.training for name, module in self.model.named_children()}
        try:
            with self._weights(), self.accelerator.autocast():
                result = EMOPipeline(self.model)(reference, audio, face_mask=mask, speed=speed, settings=settings)
        finally:
            for name, module in self.model.named_children():
                module.train(modes[name])
        write_video(path, result.frames, data.fps, audio=(result.audio_waveform, result.sample_rate))
        logger.info("wrote sample video %s", path)
        return path


def describe_run(config: TrainConfig) -> str:
    stage = resolve_stage(config.stage, config.trainable)
    return (f"stage {config.stage} ({', '.join(stage.groups)}), {config.max_steps} steps of {config.batch_size} "
            f"samples, lr {config.optimizer.learning_rate:g}, output {config.output_dir}")

