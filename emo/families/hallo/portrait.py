"""What Hallo reads from the portrait besides its pixels: the identity embedding and the
face / lip / background masks, from the user's face-analysis folder.

Hallo's `ImageProcessor.preprocess` (hallo/datasets/image_processor.py, 8fd7c57) takes the raw
512-d ArcFace embedding of the largest face (insightface antelopev2: scrfd_10g_bnkps.onnx finds
the faces, glintr100.onnx embeds the aligned crop) and builds its masks from face landmarks
(`emo.families.hallo.masks`). Both are computed here on the square reference the pipeline
animates, so the masks line up with the latents.

Running without identity is a choice the caller makes (`identity=False`: the embedding is zeros,
as Hallo's own fallback); a missing face-analysis folder is an error, never silent zeros.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...faces.boxes import FaceNotFoundError
from ...faces.face_analysis import bgr_from_image, free_face_analysis, load_face_analysis
from ...faces.onnx_models import ANTELOPE_FILES
from .masks import HalloMasks, attention_masks, face_region, reference_masks

logger = logging.getLogger(__name__)

# What Hallo's face_analysis/models folder must hold for identity and masks.
REQUIRED_FACE_FILES = (ANTELOPE_FILES["detection"], ANTELOPE_FILES["recognition"])
LANDMARK_FILE = ANTELOPE_FILES["landmark_2d_106"]


@dataclass(frozen=True)
class HalloPortrait:
    """Hallo's conditioning of one portrait, made by `hallo_portrait`.

    embedding: float32 (512,) raw ArcFace embedding of the largest face, or None when the caller
    chose to run without identity (the model then gets zeros, Hallo's no-face value);
    masks: Hallo's masks at the reference's resolution (None: the face-box approximation of
    `regions.py`, used only when the caller gives no face-analysis folder);
    landmark_source: "mediapipe", "insightface" (2d106det) or "box".
    """

    embedding: torch.Tensor | None
    masks: HalloMasks | None
    landmark_source: str

    def face_region(self, size: int) -> torch.Tensor:
        """The face locator's input: Hallo's face rectangle, float32 (3, size, size) in 0..1."""
        return face_region(self.masks, (size, size))

    def level_masks(self, size: int, levels: int) -> dict[str, list[torch.Tensor]]:
        """{"full", "face", "lip"} -> per UNet level l a (1, (size / 8 / 2^l)^2) tensor, Hallo's
        ImageProcessor output (PIL bilinear resize of its 64x64 blurred masks)."""
        masks = attention_masks(self.masks, (size, size))
        if levels > 4:
            raise ValueError(f"Hallo masks: {levels} UNet levels; Hallo's masks exist for 4")
        return {kind: tensors[:levels] for kind, tensors in masks.items()}


def face_analysis_folder(folder: str | os.PathLike, *, option: str = "face analysis folder") -> Path:
    """Check that `folder` (Hallo's `face_analysis`, or its `models/`) holds the antelopev2 files
    Hallo's identity needs; returns the folder. FileNotFoundError names the missing file and where
    it goes."""
    folder = Path(folder).expanduser()
    models = folder / "models" if (folder / "models").is_dir() else folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{option}: no folder at '{folder}'; Hallo's identity needs its face_analysis folder "
            f"(pretrained_models/face_analysis, whose models/ holds {' and '.join(REQUIRED_FACE_FILES)} from "
            "insightface's antelopev2 pack), or run without identity (--no-identity / identity off)")
    missing = [name for name in REQUIRED_FACE_FILES if not (models / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{option}: {', '.join(missing)} missing in '{models}'; put insightface's antelopev2 files "
            f"({', '.join(REQUIRED_FACE_FILES)}; {LANDMARK_FILE} for the masks) in "
            "pretrained_models/face_analysis/models/, or run without identity (--no-identity / identity off)")
    return folder


def hallo_portrait(reference: torch.Tensor, folder: str | os.PathLike | None, *, identity: bool = True,
                   embedding: torch.Tensor | None = None, landmark_source: str = "auto",
                   backend: str = "auto") -> HalloPortrait:
    """Hallo's identity and masks of a square reference image (H, W, 3) float 0..1.

    folder: Hallo's face_analysis folder (None only with identity off or an `embedding` given:
    then the masks fall back to the face-box approximation, logged). identity=False: no embedding
    (zeros in the model). embedding: a precomputed (512,) embedding that replaces the folder's.
    Raises FaceNotFoundError when the folder's detector finds no face in the reference.
    """
    if folder is None:
        if identity and embedding is None:
            raise FileNotFoundError(
                "Hallo: no face_analysis folder given; Hallo conditions on the portrait's ArcFace identity, "
                "computed from pretrained_models/face_analysis/models/ (scrfd_10g_bnkps.onnx, glintr100.onnx): "
                "give the Hallo folder (--hallo-dir) or choose to run without identity (--no-identity)")
        logger.warning("Hallo: no face_analysis folder, so the face/lip masks are approximated from the face box "
                       "(emo/families/hallo/regions.py), not Hallo's landmark masks")
        return HalloPortrait(_embedding_tensor(embedding) if identity else None, None, "box")
    folder = face_analysis_folder(folder)
    masks, source = reference_masks(reference, folder, landmark_source=landmark_source, backend=backend)
    if not identity:
        logger.info("Hallo: identity off by choice; the face embedding is zeros")
        return HalloPortrait(None, masks, source)
    if embedding is None:
        analysis = load_face_analysis(folder, backend)
        bgr = bgr_from_image(reference)
        face = analysis.largest(analysis.detect(bgr))
        if face is None:
            height, width = bgr.shape[:2]
            raise FaceNotFoundError(
                f"no face found in the reference image ({width}x{height}) by the face detector in '{folder}'; "
                "use a photo with a clear, frontal face, larger in the frame")
        embedding = analysis.embedding(bgr, face)
    return HalloPortrait(_embedding_tensor(embedding), masks, source)


def _embedding_tensor(embedding) -> torch.Tensor:
    return torch.as_tensor(np.asarray(embedding, dtype=np.float32)).flatten()


@dataclass(frozen=True)
class HalloIdentitySource:
    """Where a loaded Hallo model takes each portrait's identity and masks from (a runtime
    setting of the loaded model, not part of its checkpoint)."""

    folder: Path | None  # Hallo's face_analysis folder; None: identity off and face-box masks
    identity: bool = True  # False: run without identity (zeros), the user's explicit choice
    landmark_source: str = "auto"  # masks.LANDMARK_SOURCES


def attach_identity(model, folder: str | os.PathLike | None, *, identity: bool = True,
                    landmark_source: str = "auto") -> HalloIdentitySource:
    """Give a loaded Hallo model its identity source (checked now: a missing file fails before
    any generation). The face-analysis sessions are made once per process on first use and
    released when the model is garbage-collected."""
    if folder is None and identity:
        raise FileNotFoundError(
            "Hallo: no face_analysis folder; Hallo's identity comes from pretrained_models/face_analysis/models/ "
            f"({', '.join(REQUIRED_FACE_FILES)}): give the Hallo folder, or choose to run without identity "
            "(--no-identity / identity off)")
    source = HalloIdentitySource(None if folder is None else face_analysis_folder(folder), identity, landmark_source)
    model.hallo_identity = source
    if source.folder is not None:
        weakref.finalize(model, free_face_analysis, str(source.folder))
    return source


def box_level_masks(mask: torch.Tensor, latent_hw: tuple[int, int], levels: int) -> dict[str, list]:
    """The fallback: masks approximated from a face-region mask (regions.py), per level."""
    from .regions import per_level, region_masks

    return per_level(region_masks(mask), latent_hw, levels)
