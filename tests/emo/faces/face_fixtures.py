"""Discovery and loading of the face-analysis parity fixtures (shared/fixtures/face_analysis, or
the folder EMO_FACE_FIXTURES names): every `fixture_*` folder that holds one `face_analysis_*.json`.
The fixtures are Hallo + insightface 0.7.3's own numbers on tiny random antelopev2-shaped models."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SHARED, discover, missing_fixture

FIXTURES = Path(os.environ.get("EMO_FACE_FIXTURES", SHARED / "fixtures" / "face_analysis"))
BACKENDS = ("onnxruntime", "opencv")


def fixture_folders() -> list[Path]:
    return [folder for folder in discover(FIXTURES, "fixture_*")
            if folder.is_dir() and len(list(folder.glob("face_analysis_*.json"))) == 1]


@functools.lru_cache(maxsize=None)
def load(folder: Path) -> tuple[dict, dict]:
    """(json, {tensor name: array}) of one fixture folder."""
    from safetensors.numpy import load_file

    config = json.loads(next(folder.glob("face_analysis_*.json")).read_text())
    return config, load_file(str(folder / config["safetensors"]["file"]))


def fixture_params():
    """One param per fixture folder, or one that skips (locally) / fails (CI) when there is none."""
    folders = fixture_folders()
    return [pytest.param(f, id=f.name) for f in folders] or [pytest.param(None, id="no-fixture")]


def photo_params(faces_only: bool = False, with_masks: bool = False):
    """(fixture folder, photo name) for every photo of every fixture."""
    params = []
    for folder in fixture_folders():
        config = json.loads(next(folder.glob("face_analysis_*.json")).read_text())
        for name, photo in config["photos"].items():
            if faces_only and not photo["faces"]:
                continue
            if with_masks and "masks" not in photo:
                continue
            params.append(pytest.param(folder, name, id=f"{folder.name}-{name}"))
    return params or [pytest.param(None, None, id="no-fixture")]


def require(folder):
    if folder is None:
        missing_fixture(f"face-analysis fixtures (fixture_*/face_analysis_*.json) in {FIXTURES}")
    return folder


def backend_param(backend: str) -> str:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    return backend


def photo_bgr(folder: Path, photo: dict) -> np.ndarray:
    """The photo as Hallo hands it to insightface: PIL RGB -> numpy -> BGR uint8."""
    from PIL import Image

    with Image.open(folder / photo["file"]) as image:
        rgb = np.array(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def models_dir(folder: Path, config: dict) -> Path:
    """The fixture's stand-in for Hallo's pretrained_models/face_analysis (it holds models/)."""
    return folder / Path(config["models_folder"]).parent


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
