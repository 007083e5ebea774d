"""Audio projection: a window of stacked wav2vec2 features -> audio tokens per video frame.

Paper §3.2 "Audio Layers": the features of all wav2vec2 layers are stacked per frame and the
features of the ±m neighbouring frames are concatenated, since a mouth shape depends on the
sounds around it. An MLP maps that window to `num_tokens` tokens of the cross-attention width,
which the backbone's audio-attention attends to.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AudioConfig


class AudioProjection(nn.Module):
    def __init__(self, cfg: AudioConfig, context_dim: int):
        super().__init__()
        window = 2 * cfg.window_radius + 1
        self.in_features = window * cfg.num_layers * cfg.hidden_size
        self.num_tokens = cfg.num_tokens
        self.context_dim = context_dim
        self.proj1 = nn.Linear(self.in_features, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows: (B, F, 2m+1, L, D) -> tokens (B, F, K, context_dim)."""
        b, f = windows.shape[:2]
        x = windows.reshape(b, f, -1).to(self.proj1.weight.dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"AudioProjection: got audio windows of {tuple(windows.shape[2:])} "
                f"({x.shape[-1]} values per frame) but this model expects {self.in_features}; "
                "encode the audio with the same model's wav2vec2 encoder."
            )
        x = torch.relu(self.proj1(x))
        x = torch.relu(self.proj2(x))
        x = self.proj3(x).reshape(b, f, self.num_tokens, self.context_dim)
        return self.norm(x)
