"""Face locator: encodes the face-region mask into the backbone's first feature map.

Paper §3.2: "lightweight convolutional layers designed to encode the bounding box face region
mask"; the result is added to the noisy latent's features. Layout as AnimateAnyone's pose guider
(also Hallo's face locator): conv_in, then per stage a 3x3 conv and a stride-2 conv, then a
zero-initialised conv_out, so a new face locator starts as a no-op on a pretrained backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FaceLocatorConfig
from .initialization import apply_zero_init


class FaceLocator(nn.Module):
    ZERO_INIT = ("conv_out",)

    def __init__(self, cfg: FaceLocatorConfig, out_channels: int):
        super().__init__()
        widths = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.conditioning_channels, widths[0], kernel_size=3, padding=1)
        blocks = []
        for i in range(len(widths) - 1):
            blocks.append(nn.Conv2d(widths[i], widths[i], kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, kernel_size=3, padding=1)
        apply_zero_init(self)
        self.conditioning_channels = cfg.conditioning_channels

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask: (B, 1, H, W) in 0..1 at pixel resolution -> (B, C0, H/8, W/8)."""
        x = mask.to(self.conv_in.weight.dtype)
        if x.shape[1] != self.conditioning_channels:
            x = x.expand(-1, self.conditioning_channels, -1, -1)
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
