"""Detection, Hallo's face choice and the identity embedding against the numbers insightface 0.7.3
and Hallo computed on each fixture (both runtimes), stage by stage and end to end."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest

from emo.faces.face_analysis import (
    FaceAnalysis,
    Face,
    bgr_from_image,
    blob,
    decode_level,
    free_face_analysis,
    hallo_embedding,
    largest_index,
    load_face_analysis,
    nms,
)
from tests.emo.faces.face_fixtures import (
    BACKENDS,
    backend_param,
    load,
    models_dir,
    photo_bgr,
    photo_params,
    rel_l2,
    require,
)

STRIDES = (8, 16, 32)


@functools.lru_cache(maxsize=None)
def analysed(folder, name, backend):
    """(FaceAnalysis, image, Detection) for one photo, computed once per test session."""
    config, _ = load(folder)
    analysis = load_face_analysis(models_dir(folder, config), backend)
    image = photo_bgr(folder, config["photos"][name])
    return analysis, image, analysis.detect_details(image)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder, name", photo_params())
def test_face_analysis_detection_matches_insightface(folder, name, backend):
    config, tensors = load(require(folder))
    backend_param(backend)
    photo = config["photos"][name]
    _, image, detection = analysed(folder, name, backend)
    assert hashlib.sha256(image.tobytes()).hexdigest() == photo["pixels_sha256"]
    # Letterbox: exact.
    np.testing.assert_array_equal(detection.resized, tensors[f"{name}.det_img_resized"])
    assert detection.resized.shape[:2] == (photo["det"]["new_height"], photo["det"]["new_width"])
    assert detection.det_scale == photo["det"]["det_scale"]
    for level, stride in enumerate(STRIDES):
        np.testing.assert_allclose(detection.raw_outputs[level], tensors[f"{name}.det_raw.score_{stride}"],
                                   rtol=0, atol=1e-5)
    # Discrete decisions: exact.
    assert len(detection.candidates) == photo["det"]["num_candidates"]
    assert detection.keep.tolist() == photo["det"]["keep"]
    assert len(detection.faces) == photo["det"]["num_faces"] == len(photo["faces"])
    assert largest_index(detection.faces) == photo["hallo_choice"]["face_index"]
    if not len(detection.candidates):
        return
    np.testing.assert_allclose(detection.candidates[:, 4], tensors[f"{name}.candidates"][:, 4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(detection.candidates[:, :4], tensors[f"{name}.candidates"][:, :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(detection.candidate_kps, tensors[f"{name}.candidates_kps"], rtol=0, atol=1e-3)
    faces = detection.faces
    np.testing.assert_allclose(np.stack([f.bbox for f in faces]), tensors[f"{name}.bboxes"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.stack([f.kps for f in faces]), tensors[f"{name}.kps"], rtol=0, atol=1e-3)
    np.testing.assert_allclose([f.score for f in faces], tensors[f"{name}.det_scores"], rtol=0, atol=1e-5)
    assert all(f.bbox.dtype == np.float32 and f.kps.shape == (5, 2) for f in faces)


@pytest.mark.parametrize("folder, name", photo_params())
def test_face_analysis_decode_and_nms_given_the_stored_outputs(folder, name):
    """The post-processing alone, fed insightface's own network outputs: bit for bit."""
    config, tensors = load(require(folder))
    photo, detector = config["photos"][name], config["models"]["detection"]
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        raw_scores = tensors[f"{name}.det_raw.score_{stride}"]
        rows = tensors[f"{name}.det_raw.pos_inds_{stride}"]
        # Only the rows over the threshold were stored; the others never reach the output.
        raw_boxes = np.zeros((len(raw_scores), 4), np.float32)
        raw_kps = np.zeros((len(raw_scores), 10), np.float32)
        raw_boxes[rows] = tensors[f"{name}.det_raw.bbox_{stride}_at_pos"]
        raw_kps[rows] = tensors[f"{name}.det_raw.kps_{stride}_at_pos"]
        found, s, b, p = decode_level(raw_scores, raw_boxes, raw_kps, stride, detector["input_size"],
                                      num_anchors=detector["num_anchors"])
        np.testing.assert_array_equal(found, rows)
        assert len(found) == photo["det"]["candidates_per_level"][f"stride_{stride}"]
        scores.append(s), boxes.append(b), points.append(p)
    scores = np.vstack(scores)
    order = scores.ravel().argsort()[::-1]
    scale = np.float32(photo["det"]["det_scale"])
    candidates = np.hstack((np.vstack(boxes) / scale, scores)).astype(np.float32)[order]
    np.testing.assert_array_equal(candidates, tensors[f"{name}.candidates"])
    np.testing.assert_array_equal((np.vstack(points) / scale)[order], tensors[f"{name}.candidates_kps"])
    np.testing.assert_array_equal(nms(tensors[f"{name}.candidates"]), tensors[f"{name}.keep"])
    if not photo["faces"]:
        return
    faces = [Face(b, s, k) for b, s, k in zip(tensors[f"{name}.bboxes"], tensors[f"{name}.det_scores"],
                                               tensors[f"{name}.kps"])]
    assert largest_index(faces) == photo["hallo_choice"]["face_index"]


def test_face_analysis_nms_uses_the_plus_one_convention_and_strict_threshold():
    # Two 10x10 boxes (11x11 with +1) overlapping by 5 columns (6 with +1): IoU = 66 / 176 = 0.375.
    boxes = np.array([[0, 0, 10, 10, 0.9], [5, 0, 15, 10, 0.8], [100, 100, 110, 110, 0.7]], np.float32)
    assert nms(boxes, 0.4).tolist() == [0, 1, 2]
    assert nms(boxes, 0.37).tolist() == [0, 2]
    assert nms(boxes[:0]).tolist() == []


def test_face_analysis_largest_face_wins_over_the_best_score_and_ties_keep_order():
    small = Face(np.array([0, 0, 10, 10], np.float32), np.float32(0.9), np.zeros((5, 2), np.float32))
    big = Face(np.array([-20, 0, 10, 20], np.float32), np.float32(0.6), np.zeros((5, 2), np.float32))
    twin = Face(np.array([100, 0, 130, 20], np.float32), np.float32(0.5), np.zeros((5, 2), np.float32))
    assert largest_index([small, big, twin]) == 1
    assert FaceAnalysis.largest([small, twin, big]) is twin
    assert largest_index([]) is None and FaceAnalysis.largest([]) is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder, name", photo_params(faces_only=True))
def test_face_analysis_embedding_given_the_stored_crop(folder, name, backend):
    config, tensors = load(require(folder))
    backend_param(backend)
    analysis, _, _ = analysed(folder, name, backend)
    choice = config["photos"][name]["hallo_choice"]["face_index"]
    np.testing.assert_array_equal(blob(tensors[f"{name}.face{choice}.arcface_crop"], 127.5, 127.5),
                                  tensors[f"{name}.arcface_blob"])
    for i in range(len(config["photos"][name]["faces"])):
        embedding = analysis.embedding_of_crop(tensors[f"{name}.face{i}.arcface_crop"])
        assert embedding.dtype == np.float32 and embedding.shape == (512,)
        assert rel_l2(embedding, tensors[f"{name}.face{i}.embedding"]) <= 1e-5
        # Raw, not L2-normalised: its norm is the one insightface reported.
        assert np.linalg.norm(embedding) == pytest.approx(config["photos"][name]["faces"][i]["embedding_norm"], rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder, name", photo_params())
def test_face_analysis_hallo_embedding_end_to_end(folder, name, backend):
    config, tensors = load(require(folder))
    backend_param(backend)
    analysis, image, _ = analysed(folder, name, backend)
    embedding = analysis.hallo_face_embedding(image)
    expected = tensors[f"{name}.hallo_face_emb"]
    assert embedding.shape == (512,)
    if config["photos"][name]["hallo_choice"]["zeros"]:
        assert embedding.dtype == np.float64 == expected.dtype and not embedding.any()
    else:
        assert embedding.dtype == np.float32 and rel_l2(embedding, expected) <= 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("folder, name", photo_params(faces_only=True))
def test_face_analysis_landmarks_106(folder, name, backend):
    config, tensors = load(require(folder))
    backend_param(backend)
    analysis, image, detection = analysed(folder, name, backend)
    choice = config["photos"][name]["hallo_choice"]["face_index"]
    landmarks = analysis.landmarks_106(image, detection.faces[choice])
    assert landmarks.dtype == np.float32 and landmarks.shape == (106, 2)
    np.testing.assert_allclose(landmarks, tensors[f"{name}.face{choice}.landmark_2d_106"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("folder, name", photo_params())
def test_face_analysis_from_our_rgb_tensor(folder, name):
    """Our RGB float tensor, converted as Hallo's path converts the PNG, gives Hallo's pixels and
    embedding."""
    from emo.image import load_image

    config, tensors = load(require(folder))
    photo = config["photos"][name]
    image = load_image(folder / photo["file"])
    assert hashlib.sha256(bgr_from_image(image).tobytes()).hexdigest() == photo["pixels_sha256"]
    embedding = hallo_embedding(image, models_dir(folder, config))
    expected = tensors[f"{name}.hallo_face_emb"]
    assert embedding.dtype == expected.dtype
    if photo["hallo_choice"]["zeros"]:
        assert not embedding.any()
    else:
        assert rel_l2(embedding, expected) <= 1e-3


@pytest.mark.parametrize("folder, name", photo_params()[:1])
def test_face_analysis_is_cached_per_folder_and_can_be_freed(folder, name):
    config, _ = load(require(folder))
    root = models_dir(folder, config)
    first = load_face_analysis(root, "opencv")
    assert load_face_analysis(root / "models", "opencv") is first  # same folder, either spelling
    first.detect(photo_bgr(folder, config["photos"][name]))
    assert first.detector._session is not None
    free_face_analysis(root)
    assert first.detector._session is None
    assert load_face_analysis(root, "opencv") is not first
    free_face_analysis()


@pytest.mark.parametrize("folder, name", photo_params()[:1])
def test_face_analysis_rejects_a_non_bgr_image(folder, name):
    config, _ = load(require(folder))
    analysis = load_face_analysis(models_dir(folder, config), "opencv")
    with pytest.raises(ValueError, match="BGR uint8 image"):
        analysis.detect(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="BGR uint8 image"):
        analysis.detect(np.zeros((32, 32), np.uint8))
