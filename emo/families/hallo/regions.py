"""Approximate Hallo region masks (background / face / lip) from a face-region mask: the
fallback used only when no face_analysis folder is given (a --face-embedding file, or identity
off without the folder). With the folder, `portrait.py` uses Hallo's landmark masks (`masks.py`).

Hallo weights its audio-attention branches by three soft masks made from face landmarks:
`lip` (blurred mouth region), `face` (blurred face minus lip) and `full` (1 - blurred face, the
"pose" region). Without a landmark model we place the mouth inside the face box at the position
it has in a frontal, centred portrait, and blur like Hallo (a 51 px kernel for the face and
31 px for the lip, applied at 64x64). Callers with better masks can pass their own.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Mouth box inside the face box, as fractions of its width and height (frontal face).
LIP_BOX = (0.28, 0.62, 0.72, 0.92)


def _blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Hallo's blur: resize to 64x64, Gaussian blur, resize back."""
    h, w = mask.shape
    small = cv2.resize(mask, (64, 64), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (kernel, kernel), 0)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def region_masks(face_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """face_mask: (H, W) in 0..1 (the face region) -> {"full", "face", "lip"}: (H, W) in 0..1."""
    mask = (face_mask > 0.5).float().cpu().numpy()
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("region_masks: the face mask is empty; give a mask that covers the face.")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    lip = np.zeros_like(mask)
    lx0, ly0, lx1, ly1 = LIP_BOX
    lip[int(y0 + ly0 * (y1 - y0)):int(y0 + ly1 * (y1 - y0)), int(x0 + lx0 * (x1 - x0)):int(x0 + lx1 * (x1 - x0))] = 1
    face_soft, lip_soft = _blur(mask, 51), _blur(lip, 31)
    return {
        "full": torch.from_numpy(1.0 - face_soft).clamp(0, 1),
        "face": torch.from_numpy(face_soft - lip_soft).clamp(0, 1),
        "lip": torch.from_numpy(lip_soft).clamp(0, 1),
    }


def per_level(masks: dict[str, torch.Tensor], latent_hw: tuple[int, int], levels: int) -> dict[str, list]:
    """Each (H, W) mask at every UNet resolution level: {kind: [(1, h_l * w_l) for l in levels]},
    level 0 being the latent resolution (Hallo resizes bilinearly, then flattens)."""
    h, w = latent_hw
    out = {}
    for kind, mask in masks.items():
        x = mask[None, None].float()
        out[kind] = [F.interpolate(x, size=(h >> l, w >> l), mode="bilinear", antialias=True,
                                   align_corners=False).reshape(1, -1) for l in range(levels)]
    return out
