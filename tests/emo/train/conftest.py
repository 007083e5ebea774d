"""A tiny dataset prepared once per session with the real `prepare` command (2 worker processes)."""

from __future__ import annotations

import pytest
import torch

from emo.cli import main
from tests.emo.train.media import make_video_folder
from tests.helpers import REPO

FPS = 10  # low frame rate keeps face detection and training cheap; 2 s videos -> 20 frames
SIZE = 64


@pytest.fixture(autouse=True)
def small_cpu_footprint():
    """The tiny model's tensors are too small to gain from threads: on a shared 2-core machine two
    OpenMP threads made a training step 5-10x slower than one. oneDNN builds a kernel for every new
    convolution shape, which costs seconds per shape on a busy CPU; the plain kernels give the
    same results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    expected = make_video_folder(folder)
    return folder, expected


@pytest.fixture(scope="session")
def prepared(video_folder, tiny_checkpoint, tmp_path_factory):
    folder, _ = video_folder
    out = tmp_path_factory.mktemp("dataset") / "tiny"
    code = main(["prepare", "--videos", str(folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--fps", str(FPS), "--size", str(SIZE), "--store", "both", "--workers", "2", "-q"])
    assert code == 0
    return out


def train_args(config: str, checkpoint, dataset, output, **overrides) -> list[str]:
    """`python -m emo train` arguments for a shipped tiny config pointed at test files."""
    values = {"init": checkpoint, "data.root": dataset, "output_dir": output, "max_steps": 2,
              "checkpoints.every": 0, "logging.tensorboard": "false", **overrides}
    args = ["train", "-q", "--config", str(REPO / "configs" / "train" / config)]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args
