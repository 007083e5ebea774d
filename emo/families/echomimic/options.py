"""EchoMimic's options: what an EchoMimic checkpoint's config says beyond the shared blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

VARIANTS = ("v1", "acc")


@dataclass(frozen=True)
class EchoMimicOptions:
    """Stored in a checkpoint's `family_options` (JSON).

    variant: "v1" (pipeline_echo_mimic: 30 steps, cfg 2.5) or "acc" (pipeline_echo_mimic_acc:
    6 steps, cfg 1.0); they differ in the sampler (acc averages the windows without guidance and
    passes each prediction through x0 and back; V1 without guidance keeps the window sum);
    audio_attention_scale: the factor on `attn2` (EchoMimic's `audio_feature_ratio`);
    reference_bank_fp16: the ReferenceNet's features are rounded to fp16 before use, even in fp32
    runs (False: the parity fixtures' `bank_fp32` variant);
    whisper: the whisper encoder's dims (openai checkpoint format);
    window_shift: frame indices of the sampling windows move by this times the step index.
    """

    variant: str = "v1"
    audio_attention_scale: float = 3.0
    reference_bank_fp16: bool = True
    whisper: dict = field(default_factory=dict)
    window_shift: int = 2
    noise_clamp: float = 1.5

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"EchoMimic options: variant must be one of {VARIANTS}, got {self.variant!r}.")

    @classmethod
    def from_dict(cls, data: dict) -> "EchoMimicOptions":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"EchoMimic options: unknown fields {sorted(unknown)}; this checkpoint was probably "
                             "written by a newer version of the pack - update it.")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
