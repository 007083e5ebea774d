"""The runtime layer: one face detection per portrait, masks aligned with the crop, atomic
outputs with normal permissions, device errors in one line."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from emo.faces.boxes import FaceNotFoundError
from emo.runtime import devices
from emo.runtime.output import atomic_output, output_path
from emo.runtime.reference import crop_mask, face_region_in_crop, prepare_portrait

skimage_data = pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")


FACE = (870, 160, 980, 270)  # where the astronaut's face lands on the canvas below


@pytest.fixture(scope="module")
def landscape():
    """The astronaut photo placed off-centre on a 16:9 canvas (1280x720): a real face that the
    model-size crop would make too small to detect."""
    face = torch.from_numpy(skimage_data.astronaut()).float() / 255.0  # 512x512
    canvas = torch.full((720, 1280, 3), 0.3)
    canvas[100:612, 700:1212] = face
    return canvas


@pytest.fixture
def detections(monkeypatch):
    """The detector replaced by one that finds FACE and records what it was given."""
    import emo.runtime.reference as reference

    calls = []
    monkeypatch.setattr(reference, "detect_face_box", lambda image: calls.append(tuple(image.shape)) or FACE)
    return calls


def test_the_face_is_found_once_on_the_full_resolution_source(landscape, detections):
    portrait = prepare_portrait(landscape, 64, "face")
    assert detections == [(720, 1280, 3)]  # one detection, on the source
    assert portrait.info["face_box"] == FACE
    assert portrait.image.shape == (64, 64, 3) and portrait.mask.shape == (64, 64)
    # The mask is the face box grown by 20 %, in the crop: centred, a sensible share of it.
    ys, xs = torch.nonzero(portrait.mask, as_tuple=True)
    assert abs(xs.float().mean() - 31.5) < 4 and abs(ys.float().mean() - 31.5) < 4
    assert 0.1 < portrait.mask.mean() < 0.6


def test_a_centre_crop_still_gets_a_mask_from_the_source_detection(landscape, detections):
    portrait = prepare_portrait(landscape, 64, "center")
    assert detections == [(720, 1280, 3)]
    # The centre square is x 280..1000; the face (870..980, grown 20 %) lies at its right edge.
    assert portrait.info["mode"] == "center" and portrait.mask[:, 60:].any() and not portrait.mask[:, :40].any()


def test_a_users_source_mask_is_cropped_like_the_image():
    image = torch.rand(100, 200, 3)
    mask = torch.zeros(100, 200)
    mask[10:30, 120:150] = 1
    portrait = prepare_portrait(image, 48, "face", mask=mask)  # a mask turns the face crop into centre
    assert portrait.info["mode"] == "center" and portrait.info["box"] == (50, 0, 150, 100)
    expected = crop_mask(mask, portrait.info, 48)
    assert torch.equal(portrait.mask, expected) and portrait.mask[10, 40] == 1 and portrait.mask[10, 10] == 0
    with pytest.raises(ValueError, match="image's size"):
        prepare_portrait(image, 48, "center", mask=torch.ones(10, 10))


def test_no_face_and_no_mask_is_one_clear_error():
    with pytest.raises(FaceNotFoundError, match="mask"):
        prepare_portrait(torch.full((80, 120, 3), 0.5), 64, "center")


def test_face_region_maps_a_source_box_into_the_crop():
    info = {"box": (100, 50, 300, 250)}  # a 200 px square in the source
    region = face_region_in_crop((150, 100, 250, 200), info, 100, expand_ratio=0.0)
    assert region.shape == (100, 100)
    assert region[25:75, 25:75].all() and region.sum() == 50 * 50


def test_atomic_output_leaves_nothing_on_error_and_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list((tmp_path / "sub").iterdir()) == []
    with atomic_output(target) as temp:
        temp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_output_path_checks_the_folders_and_atomic_output_creates_them(tmp_path):
    out = output_path(tmp_path / "a" / "b" / "v.mp4", (".mp4",))
    assert not (tmp_path / "a").exists()  # a run that fails before writing leaves nothing behind
    with atomic_output(out) as temp:
        temp.write_bytes(b"video")
    assert out.read_bytes() == b"video"
    with pytest.raises(ValueError, match="must end in .mp4"):
        output_path(tmp_path / "v.gif", (".mp4",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the folder"):
        output_path(tmp_path / "file" / "v.mp4", (".mp4",))


def test_device_errors_name_what_this_install_has():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            devices.pick_device("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        devices.pick_device("gpu0")
    assert devices.pick_device("cpu") == torch.device("cpu")
    assert devices.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert devices.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        devices.pick_dtype("fp8", torch.device("cpu"))
