"""Alignment as insightface 0.7.3 computes it: Umeyama against scikit-image and the stored
matrices, and the OpenCV-4.x fixed-point warp bit for bit against the stored crops."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from emo.faces.align import (
    arcface_matrix,
    box_crop_matrix,
    invert_affine,
    similarity_matrix,
    transform_points,
    warp_affine,
)
from tests.emo.faces.face_fixtures import load, photo_bgr, photo_params, require

OPENCV_4 = cv2.__version__.startswith("4.")


@pytest.mark.parametrize("folder, name", photo_params(faces_only=True))
def test_face_analysis_arcface_matrix_from_stored_keypoints(folder, name):
    config, tensors = load(require(folder))
    for i in range(len(config["photos"][name]["faces"])):
        matrix = arcface_matrix(tensors[f"{name}.kps"][i])
        np.testing.assert_allclose(matrix, tensors[f"{name}.face{i}.arcface_M"], rtol=0, atol=2e-4)


@pytest.mark.parametrize("folder, name", photo_params(faces_only=True))
def test_face_analysis_crops_are_exact_given_the_stored_matrices(folder, name):
    config, tensors = load(require(folder))
    image = photo_bgr(folder, config["photos"][name])
    crops = 0
    for i in range(len(config["photos"][name]["faces"])):
        prefix = f"{name}.face{i}"
        for kind, size in (("arcface", 112), ("lmk", 192), ("genderage", 96)):
            if f"{prefix}.{kind}_crop" in tensors:
                crop = warp_affine(image, tensors[f"{prefix}.{kind}_M"], (size, size))
                np.testing.assert_array_equal(crop, tensors[f"{prefix}.{kind}_crop"])
                crops += 1
    assert crops >= 3


@pytest.mark.parametrize("folder, name", photo_params(faces_only=True))
def test_face_analysis_box_crop_matrices_and_landmark_mapping(folder, name):
    config, tensors = load(require(folder))
    for i in range(len(config["photos"][name]["faces"])):
        prefix = f"{name}.face{i}"
        if f"{prefix}.lmk_M" not in tensors:
            continue
        box = tensors[f"{name}.bboxes"][i]
        np.testing.assert_allclose(box_crop_matrix(box, 192), tensors[f"{prefix}.lmk_M"], rtol=0, atol=2e-4)
        np.testing.assert_allclose(box_crop_matrix(box, 96), tensors[f"{prefix}.genderage_M"], rtol=0, atol=2e-4)
        # The network's raw output (-1..1 in the crop) back to image pixels.
        raw = tensors[f"{prefix}.landmark_2d_106_raw"].reshape(-1, 2) + np.float32(1)
        raw *= 96
        points = transform_points(raw, invert_affine(tensors[f"{prefix}.lmk_M"]))
        np.testing.assert_allclose(points, tensors[f"{prefix}.landmark_2d_106"], rtol=0, atol=1e-3)


def test_face_analysis_umeyama_matches_scikit_image():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 500, (5, 2))
        angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 4)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        dst = scale * src @ rotation.T + rng.uniform(-50, 50, 2) + rng.normal(0, 2, (5, 2))
        reference = transform.SimilarityTransform()
        reference.estimate(src, dst)
        np.testing.assert_allclose(similarity_matrix(src, dst), reference.params, rtol=1e-10, atol=1e-10)
    # Collinear points: the rank-deficient branch.
    src = np.array([[0, 0], [1, 1], [2, 2], [3, 3.0]])
    dst = src * 2 + 1
    reference = transform.SimilarityTransform()
    reference.estimate(src, dst)
    np.testing.assert_allclose(similarity_matrix(src, dst), reference.params, atol=1e-10)


def test_face_analysis_arcface_matrix_recovers_a_known_similarity():
    from emo.faces.align import ARCFACE_TEMPLATE

    # Keypoints that are an exact similarity image of the template map back onto it.
    angle, scale, shift = 0.3, 2.5, np.array([140.0, 60.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = (ARCFACE_TEMPLATE.astype(np.float64) @ rotation.T * scale + shift).astype(np.float32)
    matrix = arcface_matrix(kps)
    np.testing.assert_allclose(transform_points(kps, matrix), ARCFACE_TEMPLATE, atol=1e-3)
    with pytest.raises(ValueError, match="5 keypoints"):
        arcface_matrix(kps[:4])
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        arcface_matrix(kps, 100)


@pytest.mark.skipif(not OPENCV_4, reason=f"the fixed-point reference is OpenCV 4.x; this is {cv2.__version__}")
@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_face_analysis_warp_matches_opencv_4(channels):
    rng = np.random.default_rng(channels)
    shape = (203, 151) if channels == 0 else (203, 151, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    for _ in range(25):
        angle, scale = rng.uniform(-np.pi, np.pi), np.exp(rng.uniform(-1.5, 1.5))
        matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-150, 150)],
                           [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-150, 150)]])
        size = (int(rng.integers(1, 130)), int(rng.integers(1, 130)))
        expected = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        actual = warp_affine(image, matrix, size)
        np.testing.assert_array_equal(actual, expected.reshape(actual.shape))  # OpenCV drops a 1-channel axis
    # Entirely outside the image: black.
    far = np.array([[1.0, 0, 5000], [0, 1.0, 5000]])
    assert not warp_affine(image, far, (16, 16)).any()


def test_face_analysis_warp_is_vectorised():
    image = np.random.default_rng(1).integers(0, 256, (700, 500, 3), dtype=np.uint8)
    matrix = np.array([[0.8, 0.2, -50.0], [-0.2, 0.8, 20.0]])
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        warp_affine(image, matrix, (192, 192))
        timings.append(time.perf_counter() - start)
    # ~2-7 ms on a loaded 2-core runner; a per-pixel Python loop would take seconds.
    assert sorted(timings)[2] < 0.1, timings


def test_face_analysis_warp_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        warp_affine(np.zeros((4, 4, 3), np.float32), np.eye(2, 3), (4, 4))
