"""Speed encoder: requested head-rotation speed -> per-frame speed embedding.

Paper §3.2 "Speed Layers": the speed of a frame is encoded against buckets with centres c_i and
radii r_i as tanh((s - c_i) / r_i * 3), which is ~-1 below a bucket, ~+1 above it and smooth
inside; the encodings of the ±m neighbouring frames are concatenated and an MLP gives the speed
embedding that the temporal modules cross-attend to. Centres and radii are buffers, saved with
the model, since they come from the training data's statistics. They stay float32 whatever
dtype the model is cast to (bf16 would round 0.4 to 0.4004 and 1.2 to 1.2031, moving every
bucket edge), and the codes are computed in float32; only the MLP runs in the model's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SpeedConfig


def bucket_encode(speed: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """speed: (..., F) -> (..., F, num_buckets)."""
    return torch.tanh((speed[..., None] - centers) / radii * 3.0)


def neighbour_window(x: torch.Tensor, radius: int) -> torch.Tensor:
    """x: (B, F, C) -> (B, F, (2r+1)*C): each frame with its ±r neighbours (clamped at ends)."""
    f = x.shape[1]
    index = (torch.arange(f, device=x.device)[:, None]
             + torch.arange(-radius, radius + 1, device=x.device)).clamp(0, f - 1)
    return x[:, index].flatten(2)


class SpeedEncoder(nn.Module):
    def __init__(self, cfg: SpeedConfig):
        super().__init__()
        self._buckets = (cfg.bucket_centers, cfg.bucket_radii)
        self.register_buffer("bucket_centers", torch.tensor(cfg.bucket_centers, dtype=torch.float32))
        self.register_buffer("bucket_radii", torch.tensor(cfg.bucket_radii, dtype=torch.float32))
        self.window_radius = cfg.window_radius
        in_features = (2 * cfg.window_radius + 1) * len(cfg.bucket_centers)
        self.mlp = nn.Sequential(
            nn.Linear(in_features, cfg.hidden_dim), nn.SiLU(), nn.Linear(cfg.hidden_dim, cfg.embed_dim)
        )

    BUCKET_BUFFERS = ("bucket_centers", "bucket_radii")

    def _apply(self, fn, recurse=True):
        """`Module.to`/`half`/`bfloat16` go through here: follow the device, keep the buckets fp32."""
        before = {name: self._buffers[name] for name in self.BUCKET_BUFFERS}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new is None or new.dtype == torch.float32:
                continue
            # Cast back from the exact float32 values, not from the rounded copy (meta has none).
            source = new if old.is_meta or new.is_meta else old
            self._buffers[name] = source.to(device=new.device, dtype=torch.float32)
        return self

    def reset_buffers(self) -> None:
        centers, radii = self._buckets
        device = self.bucket_centers.device
        self.bucket_centers = torch.tensor(centers, dtype=torch.float32, device=device)
        self.bucket_radii = torch.tensor(radii, dtype=torch.float32, device=device)

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        """speed: (B, F) rotation speed per frame -> (B, F, embed_dim)."""
        dtype = self.mlp[0].weight.dtype
        codes = bucket_encode(speed.float(), self.bucket_centers, self.bucket_radii)  # fp32
        return self.mlp(neighbour_window(codes, self.window_radius).to(dtype))
