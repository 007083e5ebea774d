"""Hallo's options: what a Hallo checkpoint's config says beyond the shared blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

VARIANTS = ("hallo", "hallo2", "joyhallo")


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
    other path, kept for comparison;
    variant: which release of the lineage the weights are ("hallo", "hallo2", "joyhallo"; see
    `lineage.py`): its name and defaults;
    shared_audio_attention: JoyHallo's audio modules have one cross-attention shared by the three
    regions (its `net.pth` has `attn2_0` only), Hallo's and Hallo2's three;
    audio_segment_seconds: Hallo2 encodes long audio in pieces of this many seconds (60), each
    through wav2vec2 on its own (`hallo2.hallo2_audio_features`, chosen by
    `hallo2.lineage_audio_features`); 0: the whole clip at once;
    motion_mask_rate: Hallo2 sets this share of the motion frames' pixels outside the face to
    grey before encoding them (0.25; `hallo2.mask_motion_pixels`); 0: no masking.
    """

    face_embedding_dim: int = 512
    face_tokens: int = 4
    audio_attention_dim: int = 768
    reference_bank_fp16: bool = True
    inference_path: str = "train"
    variant: str = "hallo"
    shared_audio_attention: bool = False
    audio_segment_seconds: float = 0.0
    motion_mask_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.inference_path not in ("train", "eval"):
            raise ValueError(f"Hallo options: inference_path must be 'train' or 'eval', got {self.inference_path!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"Hallo options: variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}.")
        if not 0.0 <= self.motion_mask_rate < 1.0:
            raise ValueError(f"Hallo options: motion_mask_rate must be in [0, 1), got {self.motion_mask_rate!r}.")
        if not self.audio_segment_seconds >= 0:
            raise ValueError("Hallo options: audio_segment_seconds must be >= 0 (0: no segments), "
                             f"got {self.audio_segment_seconds!r}.")

    @classmethod
    def from_dict(cls, data: dict) -> "HalloOptions":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Hallo options: unknown fields {sorted(unknown)}; this checkpoint was probably "
                             "written by a newer version of the pack - update it.")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
