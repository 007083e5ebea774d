"""The whisper-tiny audio encoder that EchoMimic conditions on, read from openai's checkpoint format.

EchoMimic (antgroup/echomimic, `src/models/whisper/`) vendors openai-whisper and uses only the
audio encoder, minus its final LayerNorm: the features are the embedding after the positional
embedding is added, then the output of every residual block (`include_embeddings=True`). This
module is that encoder alone, written from the architecture (Radford et al. 2022, "Robust Speech
Recognition via Large-Scale Weak Supervision"), without the openai-whisper package.

The checkpoint is what `torch.save({'dims': dims, 'model_state_dict': state_dict})` wrote
(EchoMimic's `pretrained_weights/audio_processor/whisper_tiny.pt`). Only `encoder.*` is used;
`decoder.*` (the text decoder) and `encoder.ln_post.*` are skipped on purpose; any other key is an
error.

Shapes: B batch, T = 1500 encoder frames (50 Hz over a 30 s segment), D = 384 (n_audio_state),
H = 6 heads, L blocks (4 in whisper-tiny).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...keys import listing, mismatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WhisperDims:
    """The encoder half of openai's `ModelDimensions`; defaults are whisper-tiny's."""

    n_mels: int = 80  # log-mel bands of the input (emo.families.echomimic.audio computes 80)
    n_audio_ctx: int = 1500  # encoder frames per 30 s segment (3000 mel frames, stride-2 conv2)
    n_audio_state: int = 384  # width; EchoMimic cuts chunks into 384-wide tokens and its UNet's
    #                           audio cross-attention is 384 wide
    n_audio_head: int = 6
    n_audio_layer: int = 4

    @classmethod
    def from_checkpoint(cls, dims: object, source: str) -> "WhisperDims":
        """The encoder dims of a checkpoint's `dims` entry (the decoder's are ignored)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(dims, Mapping) or any(name not in dims for name in names):
            found = sorted(dims) if isinstance(dims, Mapping) else type(dims).__name__
            raise ValueError(f"{source}: its 'dims' entry should hold {', '.join(names)}; found {found}. "
                             "Use the whisper_tiny.pt that ships with EchoMimic's pretrained_weights.")
        values = {name: dims[name] for name in names}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values.values()):
            raise ValueError(f"{source}: whisper dimensions must be positive integers, found {values}.")
        return cls(**values)

    def describe(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


TINY = WhisperDims()

# Widths of the released whisper sizes, to name what a wrong file is.
_SIZES = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}

# Parts of the checkpoint EchoMimic loads but never runs: the text decoder, and ln_post (its
# features are taken before it).
_SKIPPED_PREFIX = "decoder."
_SKIPPED_KEYS = ("encoder.ln_post.weight", "encoder.ln_post.bias")


def check_tiny_compatible(dims: WhisperDims, source: str) -> None:
    """EchoMimic's audio path needs whisper-tiny's encoder geometry; any number of blocks works
    (the released file has 4; the parity fixtures use fewer)."""
    wrong = {f.name: getattr(dims, f.name) for f in fields(dims)
             if f.name != "n_audio_layer" and getattr(dims, f.name) != getattr(TINY, f.name)}
    if wrong:
        size = _SIZES.get(dims.n_audio_state)
        what = f"whisper-{size}" if size and size != "tiny" else "other"
        raise ValueError(
            f"{source}: wrong whisper dimensions: EchoMimic needs whisper-tiny's encoder (n_mels 80, "
            f"n_audio_ctx 1500, n_audio_state 384, n_audio_head 6), found {what} dimensions "
            f"({dims.describe()}). Use EchoMimic's audio_processor/whisper_tiny.pt.")


class MultiHeadAttention(nn.Module):
    """Whisper's self-attention: the key projection has no bias, and q and k are each scaled by
    d_head**-0.25 before their product (as openai does; the product carries 1/sqrt(d_head))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        scale = (D // self.heads) ** -0.25
        q = self.query(x).view(B, T, self.heads, -1).transpose(1, 2) * scale  # (B, H, T, d)
        k = self.key(x).view(B, T, self.heads, -1).permute(0, 2, 3, 1) * scale  # (B, H, d, T)
        v = self.value(x).view(B, T, self.heads, -1).transpose(1, 2)  # (B, H, T, d)
        # softmax in float32 even when the encoder runs in half precision, as openai's code does
        weights = (q @ k).float().softmax(dim=-1).to(q.dtype)  # (B, H, T, T)
        return self.out((weights @ v).transpose(1, 2).reshape(B, T, D))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (openai's fp16 behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln x), then x + mlp(ln x) with a 4x GELU MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(width, heads)
        self.attn_ln = LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.mlp_ln = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder returning every layer's output (no ln_post).

    Input: log-mel `[B, n_mels, 2 * n_audio_ctx]` (a 30 s segment, 100 Hz).
    Output: `[B, n_audio_ctx, L + 1, D]`: index 0 is the embedding (convolutions + positional
    embedding), index i the output of block i.
    """

    def __init__(self, dims: WhisperDims = TINY):
        super().__init__()
        self.dims = dims
        D = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, D, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(D, D, kernel_size=3, stride=2, padding=1)  # 100 Hz -> 50 Hz
        # Sinusoids in openai's files; stored in the checkpoint, so read from it, not recomputed.
        self.register_buffer("positional_embedding", torch.zeros(dims.n_audio_ctx, D))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(D, dims.n_audio_head)
                                    for _ in range(dims.n_audio_layer))

    @property
    def num_layers(self) -> int:
        """L + 1: the number of stacked outputs per frame."""
        return len(self.blocks) + 1

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel))  # (B, D, 2T)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, D)
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(f"WhisperEncoder: the input gives {x.shape[1]} frames of width {x.shape[2]}, the "
                             f"encoder takes {tuple(self.positional_embedding.shape)}: give [B, "
                             f"{self.dims.n_mels}, {2 * self.dims.n_audio_ctx}] log-mel segments.")
        # float32 sum, then back: what openai does with its float32 buffer under fp16
        x = (x + self.positional_embedding.float()).to(x.dtype)
        outputs = [x]
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return torch.stack(outputs, dim=2)  # (B, T, L+1, D)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping, source: str = "whisper checkpoint") -> "WhisperEncoder":
        """Build from `{'dims': {...}, 'model_state_dict': {...}}` (openai's format), strictly."""
        dims, state = check_checkpoint(checkpoint, source)
        with torch.device("meta"):
            model = cls(dims)
        model = model.to_empty(device="cpu")
        model.load_state_dict({k: v.float() for k, v in state.items()})  # openai's files are fp16
        return model.eval()


def check_checkpoint(checkpoint: object,
                     source: str = "whisper checkpoint") -> tuple[WhisperDims, dict[str, torch.Tensor]]:
    """Validate an openai-format whisper checkpoint for EchoMimic without building the model:
    returns its encoder dims and encoder tensors (keys without `encoder.`), or raises one
    ValueError naming the problem (not that format, wrong dimensions, missing/unexpected keys)."""
    if not isinstance(checkpoint, Mapping) or "model_state_dict" not in checkpoint or "dims" not in checkpoint:
        found = listing(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"{source}: not an openai whisper checkpoint (expected the entries 'dims' and "
                         f"'model_state_dict'; found {found}). Use EchoMimic's audio_processor/whisper_tiny.pt.")
    dims = WhisperDims.from_checkpoint(checkpoint["dims"], source)
    state = encoder_state(checkpoint["model_state_dict"], source)
    _check_dims_match_weights(dims, state, source)
    check_tiny_compatible(dims, source)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in WhisperEncoder(dims).state_dict().items()}
    problems = mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise ValueError(f"{source}: the whisper encoder weights do not fit its dims ({dims.describe()}): "
                         f"{problems}. The file is damaged or not a whisper checkpoint.")
    return dims, state


def encoder_state(state: object, source: str) -> dict[str, torch.Tensor]:
    """The encoder tensors of a whisper `model_state_dict` (keys without `encoder.`), every other
    key accounted for: the decoder and ln_post are skipped, anything else is an error."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: 'model_state_dict' holds a {type(state).__name__}, not a dictionary of tensors.")
    encoder, unexpected = {}, []
    for key, value in state.items():
        if key.startswith(_SKIPPED_PREFIX) or key in _SKIPPED_KEYS:
            continue
        if key.startswith("encoder.") and isinstance(value, torch.Tensor):
            encoder[key[len("encoder."):]] = value
        else:
            unexpected.append(str(key))
    if unexpected:
        raise ValueError(f"{source}: unexpected entries in the whisper state dict: {listing(unexpected)} "
                         "(expected only encoder.* and decoder.* tensors).")
    if not encoder:
        raise ValueError(f"{source}: the whisper state dict has no encoder.* tensors.")
    logger.debug("%s: %d encoder tensors used; decoder and ln_post skipped", source, len(encoder))
    return encoder


def _check_dims_match_weights(dims: WhisperDims, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Compare the dims with what the weights show, so that a wrong `dims` entry is named as such
    instead of surfacing as a shape mismatch inside torch. Head counts cannot be read off the
    weights; the block count and widths can."""
    found = {}
    if "conv1.weight" in state and state["conv1.weight"].ndim == 3:
        found["n_audio_state"], found["n_mels"] = state["conv1.weight"].shape[:2]
    if "positional_embedding" in state and state["positional_embedding"].ndim == 2:
        found["n_audio_ctx"] = state["positional_embedding"].shape[0]
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    found["n_audio_layer"] = max(blocks) + 1 if blocks else 0
    differ = {name: (getattr(dims, name), value) for name, value in found.items() if getattr(dims, name) != value}
    if differ:
        detail = ", ".join(f"{name} {said} in dims but {value} in the weights"
                           for name, (said, value) in differ.items())
        raise ValueError(f"{source}: wrong whisper dimensions: {detail}. The checkpoint's dims "
                         f"({dims.describe()}) do not describe its weights; the file is damaged or was re-packed "
                         "wrongly. Use EchoMimic's audio_processor/whisper_tiny.pt.")


def read_whisper_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load of an openai whisper `.pt` with `weights_only=True` (memory-mapped when the file
    is a zip archive): `{'dims': {...}, 'model_state_dict': {...}}`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"whisper checkpoint {path} does not exist; EchoMimic keeps it at "
                                "pretrained_weights/audio_processor/whisper_tiny.pt.")
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as error:  # torch raises several types for truncated or unsafe pickles
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"{path} could not be read as a PyTorch checkpoint with weights_only=True ({first}); "
                         "it is truncated or not a whisper checkpoint - use EchoMimic's whisper_tiny.pt.") from error


def load_whisper_encoder(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """The encoder of an openai-format whisper checkpoint, on `device` in `dtype` (EchoMimic runs
    it in float16 on CUDA and float32 on the CPU)."""
    encoder = WhisperEncoder.from_checkpoint(read_whisper_checkpoint(path), source=str(path))
    return encoder.to(device=device, dtype=dtype)
