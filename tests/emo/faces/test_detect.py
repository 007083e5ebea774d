"""Tests for emo.faces.detect: real faces in real photos of any framing, measured as recall.

Photos come from the scikit-image wheel (the astronaut, the cameraman, the LFW subset of 100
faces and 100 non-faces, and its photos without people), from the shared face-analysis
fixtures, and from synthetic framings of the astronaut (tests/emo/faces/framings.py). Thresholds
are the measured figures (bench/face_detection.py) less a margin.
"""

import json
import math

import cv2
import numpy as np
import pytest
import torch

from emo.faces.detect import (
    DEFAULT_MIN_FACE_SIZE,
    DetectedFace,
    FaceNotFoundError,
    detect_faces,
    largest_face,
    pick_face,
)
from emo.image import load_image, prepare_reference
from tests.emo.faces.framings import ASTRONAUT_FACE_BOX, Framing, iou, lfw_cases, sample_grid
from tests.helpers import SHARED, discover, missing_fixture

skimage_data = pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")

# Photos in the scikit-image wheel with no human face in them (a cat, a coffee cup, a rocket,
# textures, text, microscopy, sky...).
NO_FACE_PHOTOS = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "moon", "page", "text",
                  "horse", "clock", "colorwheel", "logo", "hubble_deep_field", "retina", "cell",
                  "immunohistochemistry", "microaneurysms")


def _rgb(name):
    image = getattr(skimage_data, name)()
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8) if image.max() <= 1 else image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@pytest.fixture(scope="module")
def astronaut():
    return torch.from_numpy(skimage_data.astronaut()).float() / 255.0  # [512, 512, 3]


# ------------------------------------------------------------------ real photos


def test_the_astronauts_face_with_landmarks(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, DetectedFace) and 0.99 < face.score <= 1.0
    assert iou(face.box, ASTRONAUT_FACE_BOX) > 0.85
    (left_eye, right_eye, nose, mouth_left, mouth_right) = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert all(face.box[0] < x < face.box[2] and face.box[1] < y < face.box[3] for x, y in face.landmarks)


def test_the_cameramans_turned_face():
    # A real photo of a face in three-quarter view looking into a camera (grayscale).
    faces = detect_faces(_rgb("camera"))
    assert len(faces) == 1
    cx, cy = faces[0].center
    assert 200 < cx < 260 and 120 < cy < 200 and 50 < faces[0].width < 90


@pytest.mark.parametrize("name", NO_FACE_PHOTOS)
def test_no_face_in_photos_without_people(name):
    assert detect_faces(_rgb(name)) == []


def test_lfw_faces_are_found_and_lfw_non_faces_are_not():
    found, false_alarms = 0, 0
    for _, rgb, is_face, crop_box in lfw_cases():
        faces = detect_faces(rgb)
        if is_face:
            found += any(iou(face.box, crop_box) >= 0.4 for face in faces)
        else:
            false_alarms += bool(faces)
    # Measured: 99 of the 100 faces (the miss: a small, dark face cropped at the chin), no false alarm.
    assert found >= 97
    assert false_alarms <= 1


# ------------------------------------------------------------------ shared face-analysis fixture photos


def _fixture_photos():
    for manifest_path in discover(SHARED / "fixtures" / "face_analysis", "fixture_*/face_analysis_*.json"):
        manifest = json.loads(manifest_path.read_text())
        for name, photo in manifest["photos"].items():
            yield manifest_path, name, photo


def test_shared_fixture_photos():
    photos = list(_fixture_photos())
    if not photos:
        missing_fixture("face-analysis fixture photos (fixtures/face_analysis/fixture_*/photos)")
    from safetensors.numpy import load_file

    checked_landmarks = 0
    for manifest_path, name, photo in photos:
        image = load_image(manifest_path.parent / photo["file"])
        assert tuple(image.shape[:2]) == (photo["height"], photo["width"])
        faces = detect_faces(image)
        if not photo["expect_face"]:
            assert faces == [], name
            continue
        assert len(faces) == 1, name
        # The fixture's MediaPipe FaceMesh landmarks (a stand-in landmarker, real points on the
        # real face): iris centres 468/473, nose tip 4, mouth corners 61/291; ours within 4% of
        # the face height. Pairs are compared in image order (left to right).
        tensors = load_file(next(manifest_path.parent.glob("*.safetensors")))
        mesh = tensors.get(f"{name}.mask.landmarks_px")
        if mesh is None:
            continue
        ours = np.array(faces[0].landmarks)
        eyes, mouth = sorted(mesh[[468, 473]].tolist()), sorted(mesh[[61, 291]].tolist())
        theirs = np.array([eyes[0], eyes[1], mesh[4].tolist(), mouth[0], mouth[1]])
        error = np.abs(ours - theirs).max() / faces[0].height
        assert error < 0.04, (name, error)
        checked_landmarks += 1
    assert checked_landmarks >= 1


# ------------------------------------------------------------------ synthetic framings


@pytest.fixture(scope="module")
def framing_results():
    results = []
    for framing in sample_grid():
        rgb, truth = framing.render()
        faces = detect_faces(rgb)
        results.append((framing, truth, faces))
    return results


def test_framings_recall_and_box_accuracy(framing_results):
    """90 framings (16:9 1920x1080 and 640x360, 9:16 1080x1920; faces 40 px to 80% of the
    frame; centre, corners, off-centre; +-15 degrees; mirrored; dim and bright)."""
    best = [max((iou(face.box, truth) for face in faces), default=0.0) for _, truth, faces in framing_results]
    found = [b >= 0.6 for b in best]
    misses = [f.name for (f, _, _), ok in zip(framing_results, found) if not ok]
    # Measured: 90 of 90 (89 before the darkened retry; on the full grid of 1620: 0.994).
    assert sum(found) / len(found) >= 0.97, misses
    assert all(ok for (f, _, _), ok in zip(framing_results, found) if f.face_pixels() >= 64), misses
    assert np.median([b for b in best if b >= 0.6]) >= 0.85
    false_positives = sum(1 for _, truth, faces in framing_results for face in faces if iou(face.box, truth) < 0.3)
    assert false_positives <= 2  # measured: 1 (on the astronaut's helmet ring, at 2.3x)


def test_the_real_face_is_the_largest_in_every_framing(framing_results):
    for framing, truth, faces in framing_results:
        if faces and max(iou(face.box, truth) for face in faces) >= 0.6:
            assert iou(faces[0].box, truth) >= 0.6, framing.name


def test_largest_of_several_faces_comes_first_and_others_by_index():
    big, big_truth = Framing("16:9 1920x1080", 300, "top-left").render()
    small, small_truth = Framing("16:9 1920x1080", 90, "bottom-right", flip=True).render()
    canvas = big.copy()
    canvas[:, 960:] = small[:, 960:]  # the right half with the small face
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].area > 4 * faces[1].area
    assert iou(faces[0].box, big_truth) > 0.7 and iou(faces[1].box, small_truth) > 0.7
    assert largest_face(canvas) == faces[0]
    assert pick_face(canvas, 1) == faces[1]
    with pytest.raises(ValueError, match=r"face 2 was asked for, but 2 face\(s\) were found in the 1920x1080 image"):
        pick_face(canvas, 2)
    with pytest.raises(ValueError, match="index must be an integer >= 0"):
        pick_face(canvas, -1)


def test_huge_photos_are_detected_downscaled_with_boxes_in_source_pixels(caplog):
    rgb, truth = Framing("16:9 1920x1080", 200, "off-centre").render()
    factor = 4000 / 1920
    huge = cv2.resize(rgb, (4000, 2250), interpolation=cv2.INTER_CUBIC)
    with caplog.at_level("INFO", logger="emo.faces.detect"):
        face = largest_face(huge)
    assert "4000x2250 image is detected at 2048x1152" in caplog.text
    assert iou(face.box, tuple(v * factor for v in truth)) > 0.8


def test_an_over_exposed_face_is_found_on_the_darkened_retry(caplog):
    from emo.faces.mtcnn import load_mtcnn

    rgb, truth = Framing("16:9 640x360", 128, "top-left", rotation=15.0, lighting="bright").render()
    boxes, _, _ = load_mtcnn().detect(rgb)
    assert len(boxes) == 0  # MTCNN alone misses this washed-out, turned face
    with caplog.at_level("INFO", logger="emo.faces.detect"):
        faces = detect_faces(rgb)
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.8
    assert "only on a darkened copy" in caplog.text


def test_min_face_size_in_source_pixels():
    rgb, truth = Framing("16:9 640x360", 48, "centre").render()
    assert iou(largest_face(rgb).box, truth) > 0.6
    assert detect_faces(rgb, min_face_size=120) == []
    for bad in (0, 11.9, -40, float("nan"), "40", True):
        with pytest.raises(ValueError, match="min_face_size must be a number of pixels >= 12"):
            detect_faces(rgb, min_face_size=bad)


# ------------------------------------------------------------------ API details


def test_input_types_give_the_same_faces(astronaut):
    uint8 = skimage_data.astronaut()
    reference = detect_faces(uint8)
    assert detect_faces(astronaut) == reference
    assert detect_faces(astronaut[None].repeat(2, 1, 1, 1)) == reference  # a batch: its first image
    assert detect_faces(uint8.astype(np.float32) / 255.0) == reference


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((64, 64), np.uint8), r"uint8 RGB array of shape \[H, W, 3\], got \(64, 64\)"),
        (np.zeros((64, 64, 4), np.uint8), "RGBA"),
        (torch.zeros(64, 64), r"expected an image of shape \[H, W, 3\]"),
        (torch.full((64, 64, 3), float("nan")), "NaN"),
        ("photo.png", "expected an image tensor"),
    ],
)
def test_bad_images_are_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        detect_faces(bad)


def test_no_face_raises_a_one_line_face_not_found_error():
    coffee = _rgb("coffee")
    with pytest.raises(FaceNotFoundError) as caught:
        largest_face(coffee)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert message.startswith("no face found in the reference image (600x400 px)")
    assert f"at least {DEFAULT_MIN_FACE_SIZE:g} px" in message
    assert "clearer portrait" in message and "face mask" in message
    with pytest.raises(FaceNotFoundError, match=r"\(128x96 px\).*at least 64 px"):
        pick_face(torch.full((96, 128, 3), 0.5), min_face_size=64)


def test_pixel_box_rounds_outwards_and_clips():
    face = DetectedFace(box=(-3.2, 10.5, 100.1, 60.0), score=0.9)
    assert face.pixel_box(100, 50) == (0, 10, 100, 50)
    assert face.width == pytest.approx(103.3) and face.height == 49.5
    assert face.center == pytest.approx((48.45, 35.25))


def test_boxes_map_into_the_prepared_square_crop(astronaut):
    """What the pipeline will do: detect once on the source, map the face into the square crop
    resized to the model size; detecting again on the crop agrees with the mapped box."""
    rgb, _ = Framing("16:9 1920x1080", 160, "off-centre").render()
    image = torch.from_numpy(rgb).float() / 255.0
    face = largest_face(image)
    prepared, info = prepare_reference(image, 256, crop="face", face_box=face.pixel_box(1920, 1080))
    mapped = face.in_crop(info["box"], 256)
    again = largest_face(prepared)
    assert iou(mapped.box, again.box) > 0.8
    assert np.abs(np.array(mapped.landmarks) - np.array(again.landmarks)).max() < 0.06 * mapped.height
    side = info["box"][2] - info["box"][0]
    assert math.isclose(mapped.width, face.width * 256 / side)
    assert face.in_crop((0, 0, 1920, 1080), (1920, 1080)) == face
    with pytest.raises(ValueError, match="empty or reversed"):
        face.in_crop((10, 10, 10, 20), 64)
