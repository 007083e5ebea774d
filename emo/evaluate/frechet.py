"""FID and FVD: Fréchet distances between feature statistics of generated and real frames / clips.

The feature networks are the standard TorchScript files, loaded from a path you give (this
library never downloads anything):

- FID: ``inception-2015-12-05.pt``, the Inception-v3 of StyleGAN2-ADA's metrics (the TensorFlow
  FID network, exported to TorchScript). Call convention, as StyleGAN2-ADA's
  ``metrics/frechet_inception_distance.py`` uses it: ``detector(images, return_features=True)``
  with ``images`` uint8 [N, 3, H, W], values 0..255, any size (it resizes to 299 inside); returns
  float32 [N, 2048] pool features.
- FVD: ``i3d_torchscript.pt``, the Kinetics-400 I3D of StyleGAN-V's
  ``src/metrics/frechet_video_distance.py``: ``detector(videos, rescale=True, resize=True,
  return_features=True)`` with ``videos`` uint8 [N, 3, T, H, W], values 0..255 (rescale=True maps
  them to -1..1 and resize=True to 224x224 inside); returns float32 [N, 400] (the logits before the
  softmax). StyleGAN-V uses clips of 16 frames.

Statistics use the population covariance (divided by N), as both reference implementations do,
so numbers are comparable with theirs for the same samples. With few samples (a handful of
evaluation videos) FID and FVD are strongly biased upwards: compare runs with the same counts only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"
I3D_FILE = "i3d_torchscript.pt"
INCEPTION_DIM = 2048
I3D_DIM = 400
FVD_CLIP_FRAMES = 16


def _checked_mean(features) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"feature_statistics: expected features [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"feature_statistics: need at least 2 samples for a covariance, got {features.shape[0]}; "
                         "evaluate more or longer videos")
    if not np.all(np.isfinite(features)):
        raise ValueError("feature_statistics: the features contain NaN or infinite values")
    return features.mean(axis=0), features


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean float64 [D] and population covariance float64 [D, D] of features [N, D] (N >= 2)."""
    mean, features = _checked_mean(features)
    centred = features - mean
    return mean, centred.T @ centred / features.shape[0]


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off
    eigenvalues are clipped to 0)."""
    import scipy.linalg

    values, vectors = scipy.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for covariance matrices.

    The product of two covariances is not symmetric, and scipy.linalg.sqrtm of it returns complex
    round-off (or fails) when the covariances are singular, which they are whenever there are
    fewer samples than feature dimensions. Its eigenvalues equal those of the symmetric PSD
    matrix sqrt(sigma1) @ sigma2 @ sqrt(sigma1), so the trace is the sum of the square roots of
    those (clipped at 0): real, stable, and equal to sqrtm's where sqrtm is well behaved."""
    import scipy.linalg

    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    values = scipy.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)), clipped at 0."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes disagree: means {mu1.shape} and {mu2.shape}, covariances "
                         f"{sigma1.shape} and {sigma2.shape}; features must have one dimension D")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                     - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return max(distance, 0.0)


def frechet_distance_of_features(features1, features2) -> float:
    """Fréchet distance between two feature sets [N1, D] and [N2, D] (population covariances).

    With no more samples than dimensions (an evaluation's few hundred frames against Inception's
    2048 features) it works with the samples instead of D x D covariances, exactly: with centred
    samples A = (X1 - mu1) / sqrt(N1) and B likewise, sigma1 = A^T A, sigma2 = B^T B, and the
    non-zero eigenvalues of sigma1 sigma2 are the squared singular values of A B^T, so
    tr(sqrt(sigma1 sigma2)) is the sum of the singular values of the N1 x N2 matrix A B^T."""
    mu1, _ = _checked_mean(features1)
    mu2, _ = _checked_mean(features2)
    x1, x2 = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"frechet_distance: shapes disagree: features {x1.shape} and {x2.shape}; "
                         "features must have one dimension D")
    if max(len(x1), len(x2)) > x1.shape[1]:
        return frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    a = (x1 - mu1) / np.sqrt(len(x1))
    b = (x2 - mu2) / np.sqrt(len(x2))
    trace_sqrt = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    distance = float(np.sum((mu1 - mu2) ** 2) + np.sum(a * a) + np.sum(b * b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)


# --------------------------------------------------------------------------------------------------
# Feature networks
# --------------------------------------------------------------------------------------------------


def load_torchscript(path, what: str, device="cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript feature network from a local file (never downloads)."""
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: no file at '{path}'. This library never downloads weights: get the standard file "
            f"({INCEPTION_FILE} from StyleGAN2-ADA's metrics or {I3D_FILE} from StyleGAN-V) yourself and "
            "give its path")
    try:
        module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{what}: '{path}' is not a TorchScript file ({str(error).splitlines()[0]}); "
                         f"expected {INCEPTION_FILE} (FID) or {I3D_FILE} (FVD)") from error
    return module.eval()


def _uint8_channels_first(x, operation: str, ndim: int) -> torch.Tensor:
    """Frames [N, H, W, 3] / videos [N, T, H, W, 3] (uint8, or float 0..1) -> uint8 channels-first."""
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if x.ndim != ndim or x.shape[-1] != 3:
        layout = "[N, H, W, 3]" if ndim == 4 else "[N, T, H, W, 3]"
        raise ValueError(f"{operation}: expected {layout} RGB, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.movedim(-1, 1)  # [N, 3, H, W] or [N, 3, T, H, W]


class _FeatureNetwork:
    name = ""
    standard_dim = 0
    convention = ""
    kwargs: dict = {}

    def __init__(self, path, device="cpu", batch_size: int = 16):
        self.device = torch.device(device)
        self.module = load_torchscript(path, self.name, self.device)
        self.batch_size = batch_size
        self._checked = False

    @torch.no_grad()
    def _run(self, batch: torch.Tensor) -> np.ndarray:
        try:
            out = self.module(batch.to(self.device), **self.kwargs)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"{self.name}: the network does not take the standard call {self.convention} "
                             f"({str(error).splitlines()[0]}); is it the right file?") from error
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != batch.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.name}: expected features [N, D] from {self.convention}, got {shape}")
        if not self._checked:
            self._checked = True
            if out.shape[1] != self.standard_dim:
                logger.warning("%s: features have %d dimensions, the standard network gives %d; values will not "
                               "compare with published ones", self.name, out.shape[1], self.standard_dim)
        return out.float().cpu().numpy()

    def _features(self, x: torch.Tensor) -> np.ndarray:
        return np.concatenate([self._run(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)])


class InceptionFeatures(_FeatureNetwork):
    """FID features from StyleGAN2-ADA's TorchScript Inception (see the module docstring)."""

    name = "FID Inception"
    standard_dim = INCEPTION_DIM
    convention = "detector(uint8 [N, 3, H, W], return_features=True)"
    kwargs = {"return_features": True}

    def __call__(self, frames) -> np.ndarray:
        """frames [N, H, W, 3] uint8 or float 0..1 -> float32 [N, D]."""
        return self._features(_uint8_channels_first(frames, "InceptionFeatures", 4))


class I3DFeatures(_FeatureNetwork):
    """FVD features from StyleGAN-V's TorchScript I3D (see the module docstring)."""

    name = "FVD I3D"
    standard_dim = I3D_DIM
    convention = "detector(uint8 [N, 3, T, H, W], rescale=True, resize=True, return_features=True)"
    kwargs = {"rescale": True, "resize": True, "return_features": True}

    def __call__(self, videos) -> np.ndarray:
        """videos [N, T, H, W, 3] uint8 or float 0..1 -> float32 [N, D]."""
        return self._features(_uint8_channels_first(videos, "I3DFeatures", 5))


def fid(generated_frames, real_frames, network: InceptionFeatures) -> float:
    """FID between two sets of frames [N, H, W, 3]."""
    return frechet_distance_of_features(network(generated_frames), network(real_frames))


def video_clips(videos, clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """Non-overlapping clips of `clip_frames` frames from each video [T, H, W, 3] -> [N, clip_frames, H, W, 3]."""
    clips = []
    for video in videos:
        video = np.asarray(video.detach().cpu() if hasattr(video, "detach") else video)
        for start in range(0, video.shape[0] - clip_frames + 1, clip_frames):
            clips.append(video[start:start + clip_frames])
    if not clips:
        raise ValueError(f"FVD: every video is shorter than {clip_frames} frames; evaluate longer videos")
    return np.stack(clips)


def fvd(generated_videos, real_videos, network: I3DFeatures, clip_frames: int = FVD_CLIP_FRAMES) -> float:
    """FVD between two lists of videos [T, H, W, 3], cut into clips of `clip_frames` frames."""
    return frechet_distance_of_features(network(video_clips(generated_videos, clip_frames)),
                                        network(video_clips(real_videos, clip_frames)))
