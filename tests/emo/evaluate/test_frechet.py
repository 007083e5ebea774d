"""Fréchet distance, FID and FVD (with tiny TorchScript networks of the standard call conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from emo.evaluate import frechet
from tests.emo.evaluate.frechet_networks import save_networks


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    return save_networks(tmp_path_factory.mktemp("frechet"))


def _random_covariance(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 16))
    assert frechet.frechet_distance_of_features(features, features) == pytest.approx(0.0, abs=1e-8)
    # Fewer samples than dimensions: singular covariances, still finite and ~0 for identical sets.
    few = rng.standard_normal((5, 64))
    assert frechet.frechet_distance_of_features(few, few) == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(frechet.frechet_distance_of_features(few, rng.standard_normal((7, 64))))


def test_known_gaussians_give_the_analytic_value():
    # Commuting covariances (shared eigenvectors): d = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a, b = rng.uniform(0.5, 3.0, 6), rng.uniform(0.5, 3.0, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_trace_term_matches_scipy_sqrtm_where_sqrtm_is_well_behaved():
    rng = np.random.default_rng(2)
    s1, s2 = _random_covariance(rng, 12), _random_covariance(rng, 12)
    reference = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert frechet.trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-8)


def test_sample_route_equals_covariance_route():
    # Fewer samples than dimensions takes the exact N x N route; it must agree with D x D covariances.
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((9, 30)), rng.standard_normal((12, 30)) * 1.3 + 0.2
    by_covariance = frechet.frechet_distance(*frechet.feature_statistics(x), *frechet.feature_statistics(y))
    # (The D x D route loses ~1e-8 relative: square roots of round-off eigenvalues of singular matrices.)
    assert frechet.frechet_distance_of_features(x, y) == pytest.approx(by_covariance, rel=1e-6)


def test_sampled_gaussians_approach_the_analytic_value():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20000, 3)) * np.array([1.0, 2.0, 0.5])
    y = rng.standard_normal((20000, 3)) * np.array([1.5, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    assert frechet.frechet_distance_of_features(x, y) == pytest.approx(1.0 + 0.25, abs=0.05)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet.feature_statistics(np.full((3, 2), np.nan))


def test_fid_with_a_torchscript_inception_loaded_by_path(networks):
    inception_path, _ = networks
    network = frechet.InceptionFeatures(inception_path)
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)
    features = network(frames)
    assert features.shape == (12, 2048) and features.dtype == np.float32
    assert np.allclose(network(frames.astype(np.float32) / 255.0), features, atol=1e-5)  # float 0..1 input
    assert frechet.fid(frames, frames, network) == pytest.approx(0.0, abs=1e-6)
    darker = (frames // 2).astype(np.uint8)
    assert frechet.fid(darker, frames, network) > 1.0


def test_fvd_with_a_torchscript_i3d_loaded_by_path(networks):
    _, i3d_path = networks
    network = frechet.I3DFeatures(i3d_path)
    rng = np.random.default_rng(5)
    videos = [rng.integers(0, 256, (33, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    assert frechet.video_clips(videos).shape == (6, 16, 32, 32, 3)  # two 16-frame clips per video
    assert network(frechet.video_clips(videos)).shape == (6, 400)
    assert frechet.fvd(videos, videos, network) == pytest.approx(0.0, abs=1e-6)
    assert frechet.fvd([v // 3 for v in videos], videos, network) > 1.0
    with pytest.raises(ValueError, match="shorter than 16 frames"):
        frechet.video_clips([videos[0][:10]])


def test_missing_and_wrong_files_give_clear_errors(networks, tmp_path):
    inception_path, i3d_path = networks
    with pytest.raises(FileNotFoundError, match="never downloads"):
        frechet.InceptionFeatures(tmp_path / "inception-2015-12-05.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torchscript archive" * 10)
    with pytest.raises(ValueError, match="not a TorchScript file"):
        frechet.I3DFeatures(garbage)
    # The Inception file given for FVD: it does not take the I3D call.
    wrong = frechet.I3DFeatures(inception_path)
    with pytest.raises(ValueError, match="standard call"):
        wrong(np.zeros((2, 16, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        frechet.InceptionFeatures(inception_path)(np.zeros((2, 8, 8), np.uint8))
