"""The prepared dataset on disk: `dataset.json`, `manifest.jsonl` and `clips/` (see
`emo/data/__init__.py` for the layout). `prepare` writes it; training reads it with
`open_dataset`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.output import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "emo-dataset"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
CLIPS_DIR = "clips"
STORE_CHOICES = ("frames", "latents", "both")
ARRAYS = ("frames", "latents", "boxes", "speed", "audio", "waveform")


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(root: Path) -> dict[str, dict]:
    """source (relative path) -> its latest manifest record. A torn last line (a run killed while
    writing it) is ignored: that video is simply prepared again."""
    path = Path(root) / MANIFEST_FILE
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s line %d is not complete JSON (an interrupted run?); ignoring it", path, number)
                continue
            records[record["source"]] = record
    return records


def append_manifest(root: Path, record: dict) -> None:
    path = Path(root) / MANIFEST_FILE
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"
    with open(path, "a") as handle:
        # After a torn last line (a killed run), start a new line so this record stays readable.
        handle.write(("\n" if torn else "") + json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class Clip:
    """One clip of the dataset: `num_frames` consecutive frames of one source video."""

    name: str
    source: str
    start: int  # first frame, in the source video's frames at the dataset fps
    num_frames: int
    path: Path


@dataclass
class PreparedDataset:
    root: Path
    info: dict[str, Any]
    clips: list[Clip]
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def size(self) -> int:
        return int(self.info["size"])

    @property
    def has_frames(self) -> bool:
        return self.info["store"] in ("frames", "both")

    @property
    def has_latents(self) -> bool:
        return self.info["store"] in ("latents", "both")

    def array(self, clip: Clip, name: str) -> np.ndarray:
        """A clip's array (memory-mapped, read-only): one of `ARRAYS`."""
        key = (clip.name, name)
        if key not in self._cache:
            path = clip.path / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"dataset {self.root}: {path} is missing; run `python -m emo prepare` "
                                        "again (it re-does unfinished videos)")
            self._cache[key] = np.load(path, mmap_mode="r")
        return self._cache[key]

    def __getstate__(self):  # memory maps are reopened in each data-loader worker
        return {"root": self.root, "info": self.info, "clips": self.clips, "_cache": {}}

    def check_clips(self, names: tuple[str, ...]) -> tuple["PreparedDataset", list[str]]:
        """The dataset without clips whose arrays `names` are missing, unreadable or of the wrong
        length, and one line per dropped clip saying why (a long run must not die on one bad file)."""
        good, problems = [], []
        for clip in self.clips:
            try:
                for name in names:
                    rows = self.array(clip, name).shape[0]
                    if rows != clip.num_frames:
                        raise ValueError(f"{name}.npy has {rows} frames, the manifest says {clip.num_frames}")
            except (OSError, ValueError) as error:  # FileNotFoundError, truncated or foreign .npy
                problems.append(f"clip {clip.name} ({clip.source}): {error}")
                continue
            good.append(clip)
        return PreparedDataset(root=self.root, info=self.info, clips=good), problems

    def all_speeds(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.array(c, "speed")) for c in self.clips]) if self.clips else np.zeros(0)


def read_info(root: Path) -> dict[str, Any] | None:
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path} is not an EMO dataset description (format {info.get('format')!r}); "
                         "point to a folder written by `python -m emo prepare`")
    if info.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has dataset format version {info.get('version')}, this version reads "
                         f"{FORMAT_VERSION}; prepare the dataset again")
    return info


def open_dataset(root) -> PreparedDataset:
    """Read a prepared dataset's description and clip list (arrays are opened lazily)."""
    root = Path(root)
    info = read_info(root)
    if info is None:
        raise FileNotFoundError(f"no EMO dataset at {root} ({DATASET_FILE} not found); create it with "
                                "`python -m emo prepare --videos DIR --out DATASET --checkpoint EMO.safetensors`")
    clips = []
    for source, record in sorted(read_manifest(root).items()):
        if record.get("status") != "ok":
            continue
        for clip in record["clips"]:
            clips.append(Clip(name=clip["name"], source=source, start=int(clip["start"]),
                              num_frames=int(clip["frames"]), path=root / CLIPS_DIR / clip["name"]))
    return PreparedDataset(root=root, info=info, clips=clips)
