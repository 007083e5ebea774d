"""Face-embedding projection (Hallo's `imageproj`): a face-recognition embedding -> a few
context tokens for the spatial cross-attention. Linear -> reshape (T, D) -> LayerNorm."""

from __future__ import annotations

import torch
from torch import nn


class FaceEmbeddingProjection(nn.Module):
    def __init__(self, embedding_dim: int, num_tokens: int, context_dim: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.context_dim = context_dim
        self.proj = nn.Linear(embedding_dim, num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """embedding: (B, E) -> tokens (B, T, D)."""
        x = self.proj(embedding.to(self.proj.weight.dtype))
        return self.norm(x.reshape(-1, self.num_tokens, self.context_dim))
