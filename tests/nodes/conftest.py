"""Fixtures of the node tests: a tiny checkpoint in a models folder, output folders per test,
a real portrait and a synthetic voice in an input folder, the services reset after each test."""

from __future__ import annotations

import shutil

import pytest
import torch

from emo.checkpoints import DEMO_CHECKPOINT
from nodes import comfy_services as services
from tests.helpers import sine

# The tiny model runs hundreds of small ops per step; on a 2-core machine shared with other
# work, OpenMP threads spinning against each other make it ~10x slower than one thread.
torch.set_num_threads(1)

CHECKPOINT_NAME = "emo-tiny.safetensors"
# The pack's bundled checkpoints (the demo model), listed by EMOModelLoader after the user's own.
BUNDLED = [DEMO_CHECKPOINT.name] if DEMO_CHECKPOINT.is_file() else []
VOICE_SECONDS = 0.6
VOICE_FRAMES = 15  # ceil(0.6 s x 25 fps): two clips of 12 frames


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("models") / "emo"
    folder.mkdir()
    shutil.copy(tiny_checkpoint, folder / CHECKPOINT_NAME)
    return folder


@pytest.fixture(scope="session")
def emo_model(models_dir):
    """The tiny checkpoint loaded by the loader node's code (shared: loading is the slow part)."""
    from nodes.model import load_model

    services.set_models_dir(models_dir)
    try:
        return load_model(CHECKPOINT_NAME, "fp32")
    finally:
        services.set_models_dir()


@pytest.fixture(autouse=True)
def comfy_environment(tmp_path, models_dir):
    """Outside ComfyUI: models from the tiny folder, outputs into this test's tmp_path."""
    services.set_models_dir(models_dir)
    services.set_output_directories(tmp_path / "output", tmp_path / "temp")
    services.clear_interrupt()
    yield tmp_path
    services.reset_model_folders()
    services.set_output_directories()
    services.clear_interrupt()


@pytest.fixture(scope="session")
def astronaut():
    """A real frontal face (public-domain NASA photo bundled with scikit-image), [512, 512, 3]."""
    data = pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")
    return torch.from_numpy(data.astronaut()).float() / 255.0


@pytest.fixture(scope="session")
def voice():
    """A voice-like stereo AUDIO at 22.05 kHz."""
    return {"waveform": sine(VOICE_SECONDS, 22050, channels=2)[None], "sample_rate": 22050}


@pytest.fixture(scope="session")
def inputs(emo_model, voice):
    """The sampler's inputs on the tiny model: a 64 px reference, 15 frames of voice, a face mask."""
    from nodes.audio import EMOAudioEncode
    from nodes.reference import EMOLoadReference
    from tests.helpers import portrait

    reference, _ = EMOLoadReference().prepare(portrait(64)[None], 64, "center")
    features = EMOAudioEncode().encode(voice, emo_model, 25.0)["result"][0]  # 15 frames
    mask = torch.zeros(1, 64, 64)
    mask[:, 12:52, 16:48] = 1
    return {"model": emo_model, "reference": reference, "audio_features": features, "face_mask": mask}
