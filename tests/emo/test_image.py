"""Tests for emo.image: file loading in every Pillow mode, conversion, resizing, reference crops."""

import numpy as np
import pytest
import torch
from PIL import Image

from emo.faces.boxes import FaceNotFoundError
from emo.image import from_pil, load_image, prepare_reference, resize, to_pil


def _gradient(height, width, seed=0):
    """A smooth, seeded test image [H, W, 3] whose pixels all differ."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None, None]
    xs = torch.linspace(0, 1, width)[None, :, None]
    tint = torch.rand(1, 1, 3, generator=generator)
    return (0.6 * ys + 0.3 * xs + 0.1 * tint).clamp(0, 1).expand(height, width, 3).contiguous()


# ---------------------------------------------------------------- load_image: modes


def test_load_rgb_png_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    Image.fromarray(array, "RGB").save(tmp_path / "rgb.png")
    image = load_image(tmp_path / "rgb.png")
    assert image.dtype == torch.float32 and image.shape == (7, 5, 3)
    torch.testing.assert_close(image, torch.from_numpy(array).float() / 255)


def test_load_rgba_composites_over_white(tmp_path):
    array = np.array(
        [[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8
    )  # transparent red, opaque blue, half-transparent black
    Image.fromarray(array, "RGBA").save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    assert image.shape == (1, 3, 3)
    torch.testing.assert_close(image[0, 0], torch.ones(3))
    torch.testing.assert_close(image[0, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(image[0, 2], torch.full((3,), 1 - 128 / 255), atol=1e-6, rtol=0)


def test_load_la_composites_over_white(tmp_path):
    Image.fromarray(np.array([[[0, 0], [50, 255]]], dtype=np.uint8), "LA").save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    torch.testing.assert_close(image[0, 0], torch.ones(3))
    torch.testing.assert_close(image[0, 1], torch.full((3,), 50 / 255))


def test_load_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8), "L").save(tmp_path / "l.png")
    image = load_image(tmp_path / "l.png")
    assert image.shape == (1, 3, 3)
    torch.testing.assert_close(image[0, :, 0], torch.tensor([0.0, 100 / 255, 1.0]))
    assert torch.equal(image[..., 0], image[..., 1]) and torch.equal(image[..., 1], image[..., 2])


def test_load_16bit_grayscale_keeps_full_range(tmp_path):
    values = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    pil = Image.fromarray(values)
    assert pil.mode.startswith("I;16")
    pil.save(tmp_path / "gray16.png")
    image = load_image(tmp_path / "gray16.png")
    # Scaled by 65535, not clipped at 255: 1000 must not become 1.0.
    torch.testing.assert_close(image[0, :, 1], torch.from_numpy(values[0].astype(np.float32) / 65535))


def test_from_pil_int32_mode_is_scaled_as_16_bit():
    pil = Image.fromarray(np.array([[0, 32768, 65535, 70000]], dtype=np.int32))
    assert pil.mode == "I"
    image = from_pil(pil)
    torch.testing.assert_close(image[0, :, 0], torch.tensor([0.0, 32768 / 65535, 1.0, 1.0]))


def test_load_palette_with_transparency(tmp_path):
    pil = Image.new("P", (2, 1))
    pil.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)  # index 0 green, index 1 red
    pil.putpixel((0, 0), 0)
    pil.putpixel((1, 0), 1)
    pil.info["transparency"] = 0
    pil.save(tmp_path / "p.png", transparency=0)
    image = load_image(tmp_path / "p.png")
    torch.testing.assert_close(image[0, 0], torch.ones(3))  # transparent green -> white
    torch.testing.assert_close(image[0, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_load_palette_without_transparency(tmp_path):
    pil = Image.new("P", (1, 1))
    pil.putpalette([10, 20, 30] + [0] * 765)
    pil.save(tmp_path / "p.gif")
    torch.testing.assert_close(load_image(tmp_path / "p.gif")[0, 0], torch.tensor([10, 20, 30]) / 255.0)


def test_load_cmyk(tmp_path):
    array = np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(array, "CMYK").save(tmp_path / "cmyk.tiff")
    image = load_image(tmp_path / "cmyk.tiff")
    torch.testing.assert_close(image[0, 0], torch.ones(3))
    torch.testing.assert_close(image[0, 1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(image[0, 2], torch.zeros(3))


def test_load_applies_exif_orientation(tmp_path):
    # Stored 40 wide x 20 high, left half red, right half blue; orientation 6 means
    # "rotate 90 degrees clockwise to display", so it shows 20 wide x 40 high, red on top.
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    pil = Image.fromarray(array, "RGB")
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (40, 20, 3)
    assert image[5, 10, 0] > 0.9 and image[5, 10, 2] < 0.1  # top: red
    assert image[35, 10, 2] > 0.9 and image[35, 10, 0] < 0.1  # bottom: blue


# ---------------------------------------------------------------- load_image: errors


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_image: no file"):
        load_image(tmp_path / "nope.png")


def test_load_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_load_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(ValueError, match="cannot read .* as an image"):
        load_image(tmp_path / "notes.png")


def test_load_truncated_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="load_image"):
        load_image(tmp_path / "cut.png")


def test_load_directory(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


# ---------------------------------------------------------------- conversions and resize


def test_pil_round_trip_is_exact_on_8_bit_levels():
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 9, 3))).float() / 255
    pil = to_pil(image)
    assert pil.size == (9, 6) and pil.mode == "RGB"
    torch.testing.assert_close(from_pil(pil), image)


def test_to_pil_clips_and_accepts_a_batch_of_one():
    image = torch.tensor([[[-0.5, 0.5, 2.0]]])
    assert to_pil(image[None]).getpixel((0, 0)) == (0, 128, 255)


def test_to_pil_rejects_channels_first():
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_pil(torch.rand(3, 8, 8))


def test_resize_shapes_and_constant_image():
    image = torch.full((30, 40, 3), 0.25)
    out = resize(image, 16, 24)
    assert out.shape == (16, 24, 3)
    torch.testing.assert_close(out, torch.full((16, 24, 3), 0.25))
    assert resize(torch.rand(2, 30, 40, 3), 8, 8).shape == (2, 8, 8, 3)


def test_resize_is_antialiased():
    # A 1-pixel checkerboard shrunk 6.4x must average to grey; without antialiasing the
    # interpolation samples a few pixels and lands far from 0.5. (A non-integer factor: at
    # exactly 8x the samples fall midway between pixels and average to grey by accident.)
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = ((ys + xs) % 2).float()[..., None].expand(64, 64, 3)
    out = resize(board, 10, 10)
    assert (out - 0.5).abs().max() < 0.05


def test_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match="height"):
        resize(torch.rand(4, 4, 3), 0, 4)


# ---------------------------------------------------------------- prepare_reference


@pytest.mark.parametrize("crop", ["center", "pad"])
def test_prepare_reference_modes_give_size_square(crop):
    image = _gradient(60, 100)
    out, info = prepare_reference(image, 32, crop)
    assert out.shape == (32, 32, 3) and out.dtype == torch.float32
    assert info["mode"] == crop


def test_prepare_reference_center_box():
    image = _gradient(60, 100)
    out, info = prepare_reference(image, 64, "center")
    assert info["box"] == (20, 0, 80, 60) and not info["padded"]
    torch.testing.assert_close(out, resize(image[:, 20:80], 64, 64))


def test_prepare_reference_pad_replicates_edges():
    image = _gradient(60, 100)
    out, info = prepare_reference(image, 40, "pad")
    assert info["box"] == (0, -20, 100, 80) and info["padded"]
    # Source 100 px -> 40 px: the 20 px bands above and below become 8 rows that repeat the
    # first/last image row.
    expected_top = resize(image[:1].expand(20, 100, 3), 8, 40)
    torch.testing.assert_close(out[:4], expected_top[:4], atol=1e-5, rtol=0)
    assert (out[0] - out[3]).abs().max() < 1e-5
    assert (out[20] - out[0]).abs().max() > 0.1  # the image itself is not flat


def test_prepare_reference_face_centres_on_face_box():
    image = _gradient(100, 200)
    # Face 20 px, padding 0.5 -> 40 px square centred on the face centre (100, 50).
    out, info = prepare_reference(image, 40, "face", face_padding=0.5, face_box=(90, 40, 110, 60))
    assert info["box"] == (80, 30, 120, 70)
    assert info["face_box"] == (90, 40, 110, 60) and not info["padded"]
    torch.testing.assert_close(out, image[30:70, 80:120])


def test_prepare_reference_face_square_shifts_inside_the_image():
    image = _gradient(100, 200)
    _, info = prepare_reference(image, 40, "face", face_padding=0.5, face_box=(0, 0, 20, 20))
    assert info["box"] == (0, 0, 40, 40) and not info["padded"]
    _, info = prepare_reference(image, 40, "face", face_padding=0.5, face_box=(185, 85, 200, 100))
    assert info["box"] == (170, 70, 200, 100)  # 15 px face -> 30 px square against the corner


def test_prepare_reference_face_square_larger_than_image_pads():
    image = _gradient(60, 100)
    # Face 40 px, padding 0.6 -> 88 px square: taller than the 60 px image.
    out, info = prepare_reference(image, 88, "face", face_padding=0.6, face_box=(30, 10, 70, 50))
    assert info["box"] == (6, -14, 94, 74) and info["padded"]
    torch.testing.assert_close(out[:15], image[0:1, 6:94].expand(15, 88, 3))  # rows above the image repeat row 0
    torch.testing.assert_close(out[14:74], image[:, 6:94])


def test_prepare_reference_uses_first_image_of_a_batch():
    batch = torch.stack([_gradient(32, 32, seed=1), torch.zeros(32, 32, 3)])
    out, _ = prepare_reference(batch, 32, "center")
    torch.testing.assert_close(out, batch[0])


def test_prepare_reference_face_mode_needs_the_face_box():
    with pytest.raises(ValueError, match="face_box"):
        prepare_reference(torch.full((64, 64, 3), 0.5), 64, "face")


def test_prepare_portrait_without_a_face_says_what_to_do():
    from emo.runtime.reference import prepare_portrait

    with pytest.raises(FaceNotFoundError, match="mask"):
        prepare_portrait(torch.full((64, 64, 3), 0.5), 64, "face")


@pytest.mark.parametrize("size", [0, -8, 30, 513, 8.0, True, "512"])
def test_prepare_reference_rejects_bad_size(size):
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_reference(_gradient(16, 16), size, "center")


def test_prepare_reference_rejects_unknown_mode():
    with pytest.raises(ValueError, match="face, center, pad"):
        prepare_reference(_gradient(16, 16), 16, "stretch")


def test_prepare_reference_rejects_bad_face_box():
    with pytest.raises(ValueError, match="x0 < x1"):
        prepare_reference(_gradient(16, 16), 16, "face", face_box=(10, 0, 5, 8))
    with pytest.raises(ValueError, match="outside"):
        prepare_reference(_gradient(16, 16), 16, "face", face_box=(20, 20, 30, 30))
