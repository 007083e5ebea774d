"""Hallo's options: what a Hallo checkpoint's config says beyond the shared blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class HalloOptions:
    """Stored in a checkpoint's `family_options` (JSON).

    face_embedding_dim / face_tokens: the identity input, a face-recognition embedding (512-d
    ArcFace, insightface antelopev2's glintr100) projected to this many tokens for `attn2`;
    audio_attention_dim: width of the audio tokens the audio modules attend to;
    reference_bank_fp16: Hallo rounds the ReferenceNet's features to fp16 before use, even in
    fp32 runs (False: keep them, the parity fixtures' `bank_fp32` variant);
    inference_path: Hallo's inference script leaves the UNet in training mode, which changes the
    data path ("train", the default: plain levels skip their temporal modules); "eval" is the
    other path, kept for comparison.
    """

    face_embedding_dim: int = 512
    face_tokens: int = 4
    audio_attention_dim: int = 768
    reference_bank_fp16: bool = True
    inference_path: str = "train"

    def __post_init__(self) -> None:
        if self.inference_path not in ("train", "eval"):
            raise ValueError(f"Hallo options: inference_path must be 'train' or 'eval', got {self.inference_path!r}.")

    @classmethod
    def from_dict(cls, data: dict) -> "HalloOptions":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Hallo options: unknown fields {sorted(unknown)}; this checkpoint was probably "
                             "written by a newer version of the pack - update it.")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
