"""Reading weight files safely, lazily, with errors that name the file.

Formats are recognised by their first bytes, not their names (a `.ckpt` renamed `.safetensors`
still loads; an HTML error page saved as `.ckpt` gets a useful message):
- `.safetensors`: read through `safe_open`, one tensor at a time, only when asked for;
- PyTorch pickles (`.ckpt`, `.pt`, `.pth`, `.bin`; zip or legacy format): `torch.load` with
  `weights_only=True` only (a pickle can run code; a weights-only load cannot), memory-mapped when
  the format allows. A Lightning-style `{"state_dict": {...}, "global_step": ...}` is unwrapped.
- folders as diffusers/transformers write them: `<stem>.safetensors`, `<stem>.bin`, their
  `.fp16` variants and sharded `*.index.json` sets (`weights_in_folder`).

`WeightFile` is a read-only mapping key -> tensor that also gives every shape without reading
data (`shapes()`, `meta_view()`), so a layout can be checked in full before gigabytes are read.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from ..keys import listing

logger = logging.getLogger(__name__)



class WeightFileError(ValueError):
    """A weights file or folder that cannot be used; the message names it and says why."""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _sniff(path: Path) -> str:
    """'safetensors' or 'pickle', or a WeightFileError saying what the file is instead."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(64)
    if size == 0:
        raise WeightFileError(f"{path} is empty (0 bytes); the download or copy failed - fetch it again.")
    if len(head) >= 9:  # safetensors: u64 little-endian header length, then a JSON header
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and header_len < size:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
        return "pickle"  # torch.save's zip archive, or the legacy pickle format (protocol 2-5)
    if head.startswith(b"version https://git-lfs"):
        raise WeightFileError(f"{path} is a Git LFS pointer ({size} bytes), not the weights; run "
                              "`git lfs pull` in its repository or download the file itself.")
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        raise WeightFileError(f"{path} is an HTML page, not weights (a failed or login-walled "
                              "download?); download the file again.")
    if head.startswith(b"GGUF"):
        raise WeightFileError(f"{path} is a GGUF file; EMO reads .safetensors and PyTorch checkpoints "
                              "(.ckpt/.pt/.pth/.bin) only.")
    raise WeightFileError(
        f"{path} ({size} bytes) is neither a .safetensors file nor a PyTorch checkpoint "
        f"(it starts with {head[:16]!r}); the file may be truncated or in another format."
    )


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    with open(path, "rb") as handle:
        kind = "zip" if handle.read(4) == b"PK\x03\x04" else "legacy"
    try:
        if path.suffix.lower() == ".safetensors":
            # A pickle under a .safetensors name: torch.load would hand the path to safetensors.
            logger.warning("%s is a PyTorch pickle despite its .safetensors name", path)
            with open(path, "rb") as handle:
                obj = torch.load(handle, map_location="cpu", weights_only=True)
        else:
            # mmap keeps a multi-GB checkpoint on disk until a tensor is used (zip format only).
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as error:
        # torch's message is long; its "Unsupported global: GLOBAL x.y" part names the culprit.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        culprit = f"it refers to {found.group(1)}" if found else _first_line(error)
        raise WeightFileError(
            f"{path} holds Python objects besides tensors ({culprit}), and EMO loads pickles only with "
            "torch.load(weights_only=True) since a pickle can run code. Convert it to .safetensors with "
            "a tool you trust, or use a .safetensors download of the same model."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightFileError(
            f"{path} is not a readable PyTorch checkpoint ({_first_line(error)}); it is "
            f"probably truncated ({path.stat().st_size} bytes) - download it again."
        ) from error
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        logger.info("%s: using the weights under its 'state_dict' entry", path.name)
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a dictionary of tensors.")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightFileError(f"{path} contains no tensors (its entries: {listing(map(str, obj))}).")
    skipped = len(obj) - len(tensors)
    if skipped:
        logger.debug("%s: ignoring %d entries that are not tensors", path.name, skipped)
    return tensors


class WeightFile(Mapping):
    """The tensors of one weights file (or one sharded set), read on demand.

    `wf[key]` reads one tensor (CPU, stored dtype); `wf.shapes()` costs no tensor reads for
    .safetensors; `wf.metadata` is the .safetensors header metadata ({} for pickles).
    `WeightFile.from_tensors` wraps tensors already in memory (meta tensors too: the full-size
    layout tests run the loaders on key/shape manifests).
    """

    def __init__(self, paths: Path | str | list[Path] | None = None):
        paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths] if paths else [])]
        self.paths = paths
        self.path = (paths[0] if len(paths) == 1 else paths[0].parent) if paths else Path("<tensors>")
        self.metadata: dict[str, str] = {}
        self.format = ""
        self._handles: list = []
        # key -> (index of the safetensors handle, key in that file) or (-1, tensor in memory)
        self._where: dict[str, tuple[int, str | torch.Tensor]] = {}
        for path in paths:
            self._open(path)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], name: str = "<tensors>") -> "WeightFile":
        wf = cls()
        wf.path = Path(name)
        wf.format = "memory"
        wf._where = {k: (-1, t) for k, t in tensors.items()}
        return wf

    def with_prefix(self, prefix: str) -> "WeightFile":
        """The same tensors under `prefix + key` (no data is read or copied)."""
        wf = WeightFile()
        wf.paths, wf.path, wf.metadata, wf.format = self.paths, self.path, self.metadata, self.format
        wf._handles = self._handles
        wf._where = {prefix + k: v for k, v in self._where.items()}
        return wf

    def _open(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist.")
        if path.is_dir():
            raise WeightFileError(f"{path} is a folder; expected a weights file here.")
        kind = _sniff(path)
        self.format = self.format or kind
        if kind == "safetensors":
            try:
                handle = safe_open(str(path), framework="pt", device="cpu")
                keys = list(handle.keys())
            except Exception as error:  # safetensors raises its own (Rust) error types
                raise WeightFileError(
                    f"{path} is not a readable .safetensors file ({error}); it is probably truncated "
                    f"({path.stat().st_size} bytes) - download it again."
                ) from error
            self.metadata.update(handle.metadata() or {})
            index = len(self._handles)
            self._handles.append(handle)
            entries = {k: (index, k) for k in keys}
        else:
            entries = {k: (-1, t) for k, t in _torch_load(path).items()}
        clash = entries.keys() & self._where.keys()
        if clash:
            raise WeightFileError(f"{path}: keys also found in another shard: {listing(clash)}")
        self._where.update(entries)

    # --- Mapping --------------------------------------------------------------------------
    def __getitem__(self, key: str) -> torch.Tensor:
        index, item = self._where[key]
        if index < 0:
            return item
        try:
            return self._handles[index].get_tensor(item)
        except Exception as error:  # a file changed or cut short after it was opened
            raise WeightFileError(f"{self.path}: cannot read tensor {item} ({error}).") from error

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key) -> bool:
        return key in self._where

    # --- shapes without data --------------------------------------------------------------
    def shape(self, key: str) -> tuple[int, ...]:
        index, item = self._where[key]
        if index < 0:
            return tuple(item.shape)
        return tuple(self._handles[index].get_slice(item).get_shape())

    def shapes(self, keys: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
        return {k: self.shape(k) for k in (self._where if keys is None else keys)}

    def meta_view(self, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """key -> an empty tensor of the stored shape on the meta device (one distinct object per
        key: conversion functions run on it to learn where each tensor goes)."""
        return {k: torch.empty(s, device="meta") for k, s in self.shapes(keys).items()}

    def __repr__(self) -> str:
        return f"WeightFile({str(self.path)!r}, {len(self)} tensors)"


def existing_path(path: str | os.PathLike, what: str, hint: str) -> Path:
    """`path` as a Path, or a FileNotFoundError naming the component and what to give instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist; {hint}")
    return path


def open_weights(path: str | os.PathLike, what: str) -> WeightFile:
    """Open one weights file; `what` ("SD1.5 checkpoint", ...) goes into error messages."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist; check the path.")
    try:
        return WeightFile(path)
    except WeightFileError as error:
        raise WeightFileError(f"{what}: {error}") from None


# Names diffusers and transformers give the weights inside a model folder, most preferred first.
_FOLDER_SUFFIXES = (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin")


def weights_in_folder(folder: str | os.PathLike, stems: tuple[str, ...], what: str) -> list[Path]:
    """The weights file(s) of a diffusers/transformers model folder: `<stem>.safetensors`
    (or `.bin`, or an `.fp16` variant), or the shards listed in `<stem>.<ext>.index.json`."""
    folder = Path(folder)
    for stem in stems:
        for suffix in _FOLDER_SUFFIXES:
            index = folder / f"{stem}{suffix}.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (ValueError, KeyError) as error:
                    raise WeightFileError(f"{what}: {index} is not a valid shard index ({error}).") from None
                shards = sorted({folder / name for name in weight_map.values()})
                absent = [s.name for s in shards if not s.is_file()]
                if absent:
                    raise FileNotFoundError(f"{what}: shards listed in {index} are missing: {listing(absent)}")
                return shards
            single = folder / f"{stem}{suffix}"
            if single.is_file():
                return [single]
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    wanted = ", ".join(f"{stem}.safetensors" for stem in stems)
    raise FileNotFoundError(
        f"{what}: no weights in folder {folder} (looked for {wanted} or .bin/.fp16 variants; "
        f"found: {listing(present) or 'nothing'})."
    )


def open_folder_weights(folder: str | os.PathLike, stems: tuple[str, ...], what: str) -> WeightFile:
    paths = weights_in_folder(folder, stems, what)
    try:
        return WeightFile(paths)
    except WeightFileError as error:
        raise WeightFileError(f"{what}: {error}") from None


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise WeightFileError(f"{what}: {path} is not valid JSON ({error}).") from None


def read_folder_config(folder: Path, what: str, kind: tuple[str, str], not_kind: str,
                       missing_hint: str) -> tuple[Path, dict]:
    """A model folder's config.json and its path, checked to describe the right model:
    kind = (field, value), e.g. ("_class_name", "AutoencoderKL"); a missing field counts as the
    right value (older exports omit it). not_kind ends the wrong-model message ("an
    AutoencoderKL"), missing_hint the missing-file one."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{what}: {folder} has no config.json; {missing_hint}")
    found = read_json(cfg_path, what)
    field, value = kind
    if found.get(field, value) != value:
        raise WeightFileError(f"{what}: {cfg_path} describes a {found[field]}, not {not_kind}.")
    return cfg_path, found
