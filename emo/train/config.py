"""Training configuration: dataclasses read from YAML (configs/train/*.yaml), with dotted overrides.

A config file mirrors these dataclasses; unknown keys are errors (a typo must not silently fall
back to a default). Paths are relative to the working directory, like every other CLI path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIXED_PRECISIONS = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class DataConfig:
    root: str = ""  # a dataset written by `python -m emo prepare`
    frames_per_clip: int = 12  # f (paper §4.1)
    motion_frames: int = 4  # n (paper §4.1)
    size: int | None = None  # if set, must equal the dataset's crop size (a check, not a resize)
    use_latents: bool | str = "auto"  # auto: stored latents when the dataset has them; false: VAE on the fly
    num_workers: int = 2  # data-loader processes per training process
    speed_buckets: str = "dataset"  # stage 3: "dataset" (centres/radii from the data) or "model" (keep)
    # The face mask is the union of the clip's face boxes (paper), grown per sample by a fraction
    # drawn uniformly from [low, high] of its size on each side. (0, 0): the paper's tight union,
    # whose width then tells how far the head moves in the clip; a random margin makes the mask a
    # bound on the motion, as the grown masks inference uses (FaceRegionMask: 20 %) are, and leaves
    # the amount of motion to the audio and the speed.
    face_mask_margin: tuple[float, float] = (0.0, 0.0)
    # Whose boxes make the mask: "clip", the denoised frames' (paper), or "reference", the reference
    # frame's box alone, as inference draws it (FaceRegionMask on the portrait). A clip mask's extent
    # still tells the head's motion; a reference mask tells only where the face starts.
    face_mask_boxes: str = "clip"


@dataclass
class DropoutConfig:
    """Condition dropout for classifier-free guidance, per sample and exclusive: with probability
    `audio` only the audio is dropped (zero audio tokens), `reference` only the reference (the
    reference-attention sees only the frame itself), `both` both at once, which is exactly the
    unconditional branch of inference. `motion_frames`: the motion frames are zeroed, as for the
    first clip at inference. The paper gives no values; 0.05 each is Hallo's choice."""

    audio: float = 0.05
    reference: float = 0.05
    both: float = 0.05
    motion_frames: float = 0.05


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # "adamw8bit" needs bitsandbytes (CUDA)
    learning_rate: float = 1e-5  # paper §4.1, all stages
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999
    export: bool = True  # the final checkpoint holds the EMA weights


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between saved training states (0: only at the end)
    keep: int = 3  # newest states kept
    resume: str = "auto"  # "auto" (newest in output_dir if any), "never", or a checkpoint folder


@dataclass
class SamplingConfig:
    every: int = 0  # optimizer steps between sample videos (0: none)
    num_frames: int = 48  # frames per sample video (cut to the clip's length)
    steps: int = 20  # DDIM steps
    guidance_scale: float = 3.5
    clip: int = 0  # index of the dataset clip whose reference frame, audio and face box are used
    seed: int = 0


@dataclass
class LoggingConfig:
    every: int = 10  # optimizer steps between log rows
    tensorboard: bool | str = "auto"  # auto (if installed), true, false; a CSV log is always written


@dataclass
class AutoencoderConfig:
    """Stage `vae` only (emo/train/autoencoder.py): the weight of the KL term next to the L1 + MSE
    reconstruction loss, and how many extra synthetic identities are drawn on the fly.

    synthetic_identities: when > 0, `synthetic_share` of every batch are frames of `emo.synthetic`
    faces rendered on the fly from that many identities (seeds below the held-out range), at random
    poses, mouth openings and blinks; the rest are dataset frames. A dataset of a few hundred talkers
    teaches the autoencoder those few hundred palettes only; it then shifts the colours of unseen
    faces (held-out pixel error 3x the training one), which no later stage can undo."""

    kl_weight: float = 1.0e-4
    synthetic_identities: int = 0
    synthetic_share: float = 0.5


@dataclass
class TrainConfig:
    # 1 image pretraining, 2 video (temporal + audio), 3 speed; "vae": the autoencoder of a small
    # model that has no pretrained VAE (emo/train/autoencoder.py), run before stage 1.
    stage: int | str = 1
    init: str = ""  # EMO checkpoint to start from (new-checkpoint/assemble output, or a stage's output)
    # AnimateDiff motion module (e.g. mm_sd_v15_v2.ckpt) loaded into the temporal modules before a
    # fresh run starts; stage 2 initialises them from AnimateDiff (paper §3.3). Null: keep init's.
    motion_module: str | None = None
    output_dir: str = "runs/emo"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 4  # samples per optimizer step, summed over processes and accumulation
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (quote "no": bare YAML no is false, also accepted)
    gradient_checkpointing: bool = False
    trainable: list[str] | None = None  # parameter groups; None = the stage's (emo/train/stages.py)
    export_precision: str = "fp32"  # dtype of the final .safetensors
    data: DataConfig = field(default_factory=DataConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)

    def validate(self) -> "TrainConfig":
        if self.mixed_precision is False:  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        checks = [
            (self.stage in (1, 2, 3, "vae"), f"stage must be 1, 2, 3 or vae, got {self.stage!r}"),
            (self.autoencoder.kl_weight >= 0, f"autoencoder.kl_weight must be >= 0, got {self.autoencoder.kl_weight}"),
            (self.autoencoder.synthetic_identities >= 0,
             f"autoencoder.synthetic_identities must be >= 0, got {self.autoencoder.synthetic_identities}"),
            (0 < self.autoencoder.synthetic_share <= 1,
             f"autoencoder.synthetic_share must be in (0, 1], got {self.autoencoder.synthetic_share}"),
            (bool(self.init), "init is not set: give the EMO checkpoint to start from"),
            (bool(self.data.root), "data.root is not set: give a dataset written by `python -m emo prepare`"),
            (self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.gradient_accumulation_steps >= 1,
             f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}"),
            (self.mixed_precision in MIXED_PRECISIONS,
             f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}"),
            (self.export_precision in ("fp32", "fp16", "bf16"),
             f"export_precision must be fp32, fp16 or bf16, got {self.export_precision!r}"),
            (self.data.frames_per_clip >= 1, f"data.frames_per_clip must be >= 1, got {self.data.frames_per_clip}"),
            (self.data.motion_frames >= 0, f"data.motion_frames must be >= 0, got {self.data.motion_frames}"),
            (self.data.use_latents in ("auto", True, False),
             f"data.use_latents must be auto, true or false, got {self.data.use_latents!r}"),
            (0 <= self.data.face_mask_margin[0] <= self.data.face_mask_margin[1],
             f"data.face_mask_margin must be [low, high] with 0 <= low <= high, got {list(self.data.face_mask_margin)}"),
            (self.data.face_mask_boxes in ("clip", "reference"),
             f"data.face_mask_boxes must be clip or reference, got {self.data.face_mask_boxes!r}"),
            (self.data.speed_buckets in ("dataset", "model"),
             f"data.speed_buckets must be dataset or model, got {self.data.speed_buckets!r}"),
            (self.optimizer.name in OPTIMIZERS,
             f"optimizer.name must be one of {OPTIMIZERS}, got {self.optimizer.name!r}"),
            (self.optimizer.lr_scheduler in LR_SCHEDULERS,
             f"optimizer.lr_scheduler must be one of {LR_SCHEDULERS}, got {self.optimizer.lr_scheduler!r}"),
            (self.optimizer.learning_rate > 0,
             f"optimizer.learning_rate must be > 0, got {self.optimizer.learning_rate}"),
            (0 < self.ema.decay < 1, f"ema.decay must be between 0 and 1, got {self.ema.decay}"),
            (self.checkpoints.every >= 0 and self.checkpoints.keep >= 1,
             "checkpoints.every must be >= 0 and checkpoints.keep >= 1"),
            (self.logging.tensorboard in ("auto", True, False),
             f"logging.tensorboard must be auto, true or false, got {self.logging.tensorboard!r}"),
        ]
        drop = self.dropout
        for name in ("audio", "reference", "both", "motion_frames"):
            value = getattr(drop, name)
            checks.append((0 <= value <= 1, f"dropout.{name} must be within 0..1, got {value}"))
        checks.append((drop.audio + drop.reference + drop.both <= 1,
                       "dropout.audio + dropout.reference + dropout.both must be <= 1"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"train config: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"train config: {where or 'the file'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"train config: unknown key(s) {sorted(f'{where}{k}' for k in unknown)}; "
                         f"known in {where or 'the top level'}: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if default is not None and dataclasses.is_dataclass(default()) and value is not None:
            kwargs[name] = _build(type(default()), value, f"{where}{name}.")
        elif name in ("betas", "face_mask_margin"):
            kwargs[name] = _pair(value, f"{where}{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _pair(value, where: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"train config: {where} must be a list of two numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _apply_override(data: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ValueError(f"train config: override {override!r} must look like section.key=value")
    target = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ValueError(f"train config: override {override!r}: {part} is not a section")
    target[parts[-1]] = yaml.safe_load(text)


def load_train_config(path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config, apply `section.key=value` overrides (values parsed as YAML),
    and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}; see configs/train/ for examples")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"train config: {path} is not valid YAML ({error})") from error
    for override in overrides:
        _apply_override(data, override)
    # YAML reads 1e-5 without a dot as a string; numbers in the dataclasses are numbers.
    _coerce_numbers(data)
    return _build(TrainConfig, data, "").validate()


def _coerce_numbers(data: dict) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            _coerce_numbers(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if "e" in value.lower() and key not in ("root", "init", "output_dir", "resume", "motion_module"):
                data[key] = number
