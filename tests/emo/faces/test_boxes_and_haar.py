"""Tests for emo.faces: Haar detection on a real photo, box arithmetic, the face-region mask."""

import pytest
import torch

import emo.faces.haar as face
from emo.faces.boxes import FaceNotFoundError, box_mask, expand_box, resize_mask, union_box
from emo.faces.haar import detect_face_box, detect_face_boxes
from emo.faces.region import face_region_mask
from emo.image import resize

# NASA's public-domain portrait of Eileen Collins, shipped inside the scikit-image wheel
# (requirements-test.txt), so detection is tested on a real face without any download.
skimage_data = pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")

# Where the face is in the 512x512 astronaut photo (checked by eye): her face spans about
# x 180..270, y 70..160.
ASTRONAUT_FACE_CENTER = (224, 114)


@pytest.fixture(scope="module")
def astronaut():
    return torch.from_numpy(skimage_data.astronaut()).float() / 255.0  # [512, 512, 3]


def _center(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


# ---------------------------------------------------------------- detection


def test_detects_the_astronauts_face(astronaut):
    box = detect_face_box(astronaut)
    cx, cy = _center(box)
    assert abs(cx - ASTRONAUT_FACE_CENTER[0]) < 20 and abs(cy - ASTRONAUT_FACE_CENTER[1]) < 20
    assert 60 <= box[2] - box[0] <= 140 and 60 <= box[3] - box[1] <= 140
    assert all(isinstance(v, int) for v in box)


def test_boxes_are_sorted_largest_first(astronaut):
    # The photo at full size on the left, a half-size copy on the right: two faces.
    canvas = torch.full((512, 768, 3), 0.5)
    canvas[:, :512] = astronaut
    canvas[128:384, 512:] = resize(astronaut, 256, 256)
    boxes = detect_face_boxes(canvas)
    assert len(boxes) == 2
    big, small = boxes
    assert (big[2] - big[0]) > 1.5 * (small[2] - small[0])
    assert big[2] <= 512 and small[0] >= 512


def test_large_images_are_detected_in_source_pixels(astronaut):
    # 1536 px is downscaled for detection; the box must come back in 1536-px coordinates.
    box = detect_face_box(resize(astronaut, 1536, 1536))
    cx, cy = _center(box)
    assert abs(cx - 3 * ASTRONAUT_FACE_CENTER[0]) < 60 and abs(cy - 3 * ASTRONAUT_FACE_CENTER[1]) < 60


def test_no_face_raises_and_mentions_the_mask():
    flat = torch.full((128, 128, 3), 0.5)
    assert detect_face_boxes(flat) == []
    with pytest.raises(FaceNotFoundError, match="no face found in the reference image.*mask") as caught:
        detect_face_box(flat)
    assert isinstance(caught.value, ValueError)


def test_missing_cascade_names_the_opencv_requirement(monkeypatch, tmp_path):
    monkeypatch.setattr(face.cv2.data, "haarcascades", str(tmp_path) + "/")
    face._face_cascade.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="opencv-python>=4.8,<5"):
            detect_face_boxes(torch.zeros(32, 32, 3))
    finally:
        monkeypatch.undo()
        face._face_cascade.cache_clear()


# ---------------------------------------------------------------- boxes


def test_expand_box_grows_each_side_by_ratio():
    assert expand_box((40, 40, 60, 80), 0.5, 200, 200) == (30, 20, 70, 100)
    assert expand_box((40, 40, 60, 80), 0.0, 200, 200) == (40, 40, 60, 80)
    assert expand_box((10, 10, 13, 13), 0.1, 200, 200) == (9, 9, 14, 14)  # rounded outwards


def test_expand_box_clips_to_the_image():
    assert expand_box((10, 20, 30, 60), 0.5, 35, 70) == (0, 0, 35, 70)


def test_expand_box_rejects_bad_input():
    with pytest.raises(ValueError, match="ratio"):
        expand_box((0, 0, 10, 10), -0.1, 20, 20)
    with pytest.raises(ValueError, match="x0 < x1"):
        expand_box((10, 0, 10, 10), 0.1, 20, 20)
    with pytest.raises(ValueError, match="outside"):
        expand_box((30, 30, 40, 40), 0.0, 20, 20)


def test_union_box():
    assert union_box([(10, 20, 30, 40), (5, 25, 20, 50), (12, 22, 35, 30)]) == (5, 20, 35, 50)
    assert union_box([(1, 2, 3, 4)]) == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="no boxes"):
        union_box([])


def test_box_mask_values():
    mask = box_mask((2, 1, 5, 4), 6, 8)
    assert mask.shape == (6, 8) and mask.dtype == torch.float32
    expected = torch.zeros(6, 8)
    expected[1:4, 2:5] = 1
    assert torch.equal(mask, expected)


def test_box_mask_clips_boxes_beyond_the_image():
    mask = box_mask((-3, -3, 2, 100), 4, 4)
    assert mask.sum() == 8 and mask[:, :2].eq(1).all()


# ---------------------------------------------------------------- face_region_mask


def test_face_region_mask_from_detection(astronaut):
    mask = face_region_mask(astronaut, expand_ratio=0.2)
    expected = box_mask(expand_box(detect_face_box(astronaut), 0.2, 512, 512), 512, 512)
    assert torch.equal(mask, expected)
    assert mask[ASTRONAUT_FACE_CENTER[1], ASTRONAUT_FACE_CENTER[0]] == 1 and mask[500, 10] == 0


def test_face_region_mask_without_face_or_mask_raises():
    with pytest.raises(FaceNotFoundError, match="mask"):
        face_region_mask(torch.full((64, 64, 3), 0.5))


def test_mask_override_is_resized_and_binarised():
    # No face in the image: the given mask must be used without detection.
    image = torch.full((16, 16, 3), 0.5)
    small = torch.full((1, 8, 8), 0.3)
    small[0, 2:6, 2:6] = 0.7
    mask = face_region_mask(image, mask=small)
    expected = torch.zeros(16, 16)
    expected[4:12, 4:12] = 1
    assert torch.equal(mask, expected)


def test_mask_override_accepts_bool_channel_last_at_image_size():
    mask = torch.zeros(10, 12, 1, dtype=torch.bool)
    mask[3:5, 4:9] = True
    out = face_region_mask(torch.zeros(10, 12, 3), mask=mask)
    assert out.dtype == torch.float32 and out.shape == (10, 12) and out.sum() == 10


def test_mask_override_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        face_region_mask(torch.zeros(8, 8, 3), mask=torch.full((8, 8), 0.49))


def test_mask_override_rejects_batches_and_nan():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        face_region_mask(torch.zeros(8, 8, 3), mask=torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        face_region_mask(torch.zeros(8, 8, 3), mask=torch.full((8, 8), float("nan")))


def test_resize_mask_nearest_keeps_values():
    mask = torch.tensor([[0.0, 0.25], [0.75, 1.0]])
    out = resize_mask(mask, 4, 6)
    assert out.shape == (4, 6)
    assert set(out.unique().tolist()) == {0.0, 0.25, 0.75, 1.0}
    assert torch.equal(out[:2, :3], torch.zeros(2, 3)) and torch.equal(out[2:, 3:], torch.ones(2, 3))
