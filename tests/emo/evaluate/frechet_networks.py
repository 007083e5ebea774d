"""Tiny random TorchScript stand-ins for the FID Inception and the FVD I3D, with the standard
call conventions (see emo/evaluate/frechet.py), saved to files so they load by path."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


class TinyInception(torch.nn.Module):
    """detector(uint8 [N, 3, H, W], return_features=True) -> [N, 2048], any H, W."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Linear(3 * 4 * 4, 2048)
        self.logits = torch.nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 images 0..255")
        pooled = F.adaptive_avg_pool2d(x.float() / 255.0, (4, 4)).flatten(1)
        features = torch.tanh(self.features(pooled * 4.0))
        return features if return_features else self.logits(features)


class TinyI3D(torch.nn.Module):
    """detector(uint8 [N, 3, T, H, W], rescale=True, resize=True, return_features=True) -> [N, 400]."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Linear(3 * 2 * 4 * 4, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 5:
            raise RuntimeError("expected uint8 videos [N, 3, T, H, W]")
        y = x.float()
        if rescale:
            y = y / 127.5 - 1.0
        if resize:
            y = F.interpolate(y, size=(y.shape[2], 16, 16), mode="trilinear", align_corners=False)
        pooled = F.adaptive_avg_pool3d(y, (2, 4, 4)).flatten(1)
        features = self.features(pooled * 4.0)
        return features if return_features else torch.softmax(features, dim=1)


def save_networks(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    inception, i3d = folder / "inception-2015-12-05.pt", folder / "i3d_torchscript.pt"
    torch.jit.script(TinyInception().eval()).save(str(inception))
    torch.jit.script(TinyI3D().eval()).save(str(i3d))
    return inception, i3d
