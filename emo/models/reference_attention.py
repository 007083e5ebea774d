"""Reference-attention and context attention as diffusers attention processors.

Each spatial transformer block of an SD UNet has a self-attention (`attn1`) and a
cross-attention (`attn2`). The EMO lineage uses them as:
- `attn1` = **reference-attention**: the ReferenceNet runs the same block on the reference image
  and we record the input of its `attn1` (the LayerNorm'd features). In the backbone, each frame's
  `attn1` attends to its own tokens *and* those recorded features (keys/values concatenated along
  the token axis), which carries the identity of the reference into every frame.
- `attn2` = cross-attention to a context: in EMO the **audio-attention** (each frame attends to
  its audio tokens); other families attend to other tokens (e.g. a face embedding's).

Processors are paired by module path (`down_blocks.0.attentions.0.transformer_blocks.0.attn1`),
which is the same in both UNets. Per-call state travels in `cross_attention_kwargs["emo"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ReferenceFeatures:
    """What the ReferenceNet computes once per clip.

    attention: block path -> (B, L, C) `attn1` inputs of the reference image.
    motion: motion-module site -> (B, n, C, H, W) features of the n motion frames.
    """

    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    motion: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_motion_frames(self) -> int:
        return next(iter(self.motion.values())).shape[1] if self.motion else 0

    def to(self, device=None, dtype=None) -> "ReferenceFeatures":
        return ReferenceFeatures(
            {k: v.to(device=device, dtype=dtype) for k, v in self.attention.items()},
            {k: v.to(device=device, dtype=dtype) for k, v in self.motion.items()},
        )


@dataclass
class AttentionCall:
    """Per-forward state shared by every processor of one UNet call."""

    mode: str  # "write" (ReferenceNet) or "read" (backbone)
    batch_size: int  # videos (read) or images (write) in the call
    images_per_item: int = 1  # write: 1 reference + n motion images per item
    reference: ReferenceFeatures | None = None  # read: what to attend to
    # read: which rows use the reference (False = the unconditional branch of classifier-free
    # guidance): a tuple of batch_size bools, or a (batch_size,) bool tensor; None = every row.
    reference_rows: tuple[bool, ...] | torch.Tensor | None = None
    # read: how reference items are spread over the (b f) rows. False: row b*F+i uses item b.
    # True: item (b*F+i) % B, for a reader that tiles its bank over the frames (so with guidance
    # every other conditional frame sees the reference item of the other branch).
    tile_reference_items: bool = False
    recorded: dict[str, torch.Tensor] = field(default_factory=dict)  # write: reference tokens
    # write: also keep every image's tokens (B, 1+n, L, C) in `recorded_all` (for a family whose
    # motion-frame features are the attn1 inputs)
    record_all_images: bool = False
    recorded_all: dict[str, torch.Tensor] = field(default_factory=dict)


def _attend(attn, query_input: torch.Tensor, kv_input: torch.Tensor) -> torch.Tensor:
    """Multi-head attention with `attn`'s projections; inputs (N, Lq, C) and (N, Lk, Ck)."""
    n, lq, _ = query_input.shape
    heads = attn.heads
    q = attn.to_q(query_input)
    k = attn.to_k(kv_input)
    v = attn.to_v(kv_input)
    hd = q.shape[-1] // heads
    q = q.view(n, lq, heads, hd).transpose(1, 2)  # (N, heads, Lq, hd)
    k = k.view(n, -1, heads, hd).transpose(1, 2)
    v = v.view(n, -1, heads, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    out = out.transpose(1, 2).reshape(n, lq, heads * hd)
    return attn.to_out[1](attn.to_out[0](out))


class ReferenceAttentionProcessor:
    """For `attn1`: records (write) or attends to (read) the reference features."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 emo: AttentionCall | None = None):
        # hidden_states: (N, L, C) with N = batch * frames (read) or batch * images (write)
        if emo is None:
            return _attend(attn, hidden_states, hidden_states)
        if emo.mode == "write":
            per_item = hidden_states.unflatten(0, (emo.batch_size, emo.images_per_item))
            emo.recorded[self.name] = per_item[:, 0]  # the reference image's tokens
            if emo.record_all_images:
                emo.recorded_all[self.name] = per_item
            return _attend(attn, hidden_states, hidden_states)
        ref = emo.reference.attention.get(self.name) if emo.reference is not None else None
        if ref is None:
            return _attend(attn, hidden_states, hidden_states)
        frames = hidden_states.shape[0] // emo.batch_size
        ref = ref.to(hidden_states.dtype).expand(emo.batch_size, -1, -1)
        if emo.tile_reference_items:
            ref = ref.repeat(frames, 1, 1)  # (B*F, L, C), items tiled: b0, b1, b0, b1, ...
        else:
            ref = ref.repeat_interleave(frames, dim=0)  # (B*F, L, C), row order (b f)
        rows = emo.reference_rows
        if rows is None:
            return _attend(attn, hidden_states, torch.cat([hidden_states, ref], dim=1))
        if not isinstance(rows, torch.Tensor):
            return _attend_rows_fixed(attn, hidden_states, ref, tuple(bool(r) for r in rows), frames)
        rows = rows.to(hidden_states.device).repeat_interleave(frames)
        out = torch.empty_like(hidden_states)
        if rows.any():
            h = hidden_states[rows]
            out[rows] = _attend(attn, h, torch.cat([h, ref[rows]], dim=1)).to(out.dtype)
        if not rows.all():
            h = hidden_states[~rows]
            out[~rows] = _attend(attn, h, h).to(out.dtype)
        return out


def row_runs(flags: tuple[bool, ...], frames: int) -> list[tuple[int, int, bool]]:
    """Runs of videos with equal flags as (first row, end row, flag) over the (b f) rows, each
    video being `frames` rows: fixed per call, so each run is a slice (no boolean indexing, no
    host sync, no graph break)."""
    runs = []
    for b, flag in enumerate(flags):
        if runs and runs[-1][2] == bool(flag):
            runs[-1] = (runs[-1][0], (b + 1) * frames, bool(flag))
        else:
            runs.append((b * frames, (b + 1) * frames, bool(flag)))
    return runs


def _attend_rows_fixed(attn, hidden_states, ref, rows: tuple[bool, ...], frames: int) -> torch.Tensor:
    """Reference-attention for rows fixed per call (guidance's [uncond, cond]), run by run."""
    pieces = []
    for start, end, with_reference in row_runs(rows, frames):
        h = hidden_states[start:end]
        if with_reference:
            pieces.append(_attend(attn, h, torch.cat([h, ref[start:end]], dim=1)))
        else:
            pieces.append(_attend(attn, h, h))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


class ContextAttentionProcessor:
    """For `attn2`: cross-attention to the per-frame context (EMO: the audio tokens), its output
    times `scale` (1 for EMO)."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 emo: AttentionCall | None = None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = _attend(attn, hidden_states, context)
        return out if self.scale == 1.0 else out * self.scale
