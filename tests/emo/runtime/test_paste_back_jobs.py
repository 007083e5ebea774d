"""`emo generate` pastes the animated face back into the photo: a video of the photo's size (or
the capped size) by default, the model's square with --no-paste-back. (0.2 s of audio: 5
frames, one clip.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emo.cli import main
from emo.video import probe_video, read_video_frames
from tests.helpers import sine, write_wav

skimage_data = pytest.importorskip("skimage.data", reason="install requirements-test.txt (scikit-image)")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 16:9 photo (192x108) with its face mask, the same photo one pixel larger each way, the
    astronaut (twice its size) on a 1920x1080 canvas, and a 0.6 s voice."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:109, 0:193]
    photo = np.stack([80 + xs * 0.6, 60 + ys * 1.2, 150 - xs * 0.3], axis=-1) + rng.normal(0, 2, (109, 193, 3))
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(folder / "odd.png")  # 193x109
    Image.fromarray(photo[:108, :192]).save(folder / "photo.png")  # 192x108
    mask = np.zeros((108, 192), np.uint8)
    mask[20:90, 60:130] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.pad(mask, ((0, 1), (0, 1)))).save(folder / "odd_mask.png")
    canvas = np.full((1080, 1920, 3), 70, np.uint8)
    canvas[28:1052, 700:1724] = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((1024, 1024)))
    Image.fromarray(canvas).save(folder / "astronaut.png")
    write_wav(folder / "voice.wav", sine(0.6, 16000), 16000)
    return folder


def generate(media, checkpoint, out, image="photo.png", mask="mask.png", *extra) -> int:
    args = ["generate", "--quiet", "--image", str(media / image), "--audio", str(media / "voice.wav"),
            "--checkpoint", str(checkpoint), "--out", str(out), "--steps", "1", "--duration", "0.2", "--crf", "10",
            *extra]
    if mask:
        args += ["--mask", str(media / mask)]
    return main(args)


def test_a_16_9_photo_gives_a_video_of_its_size_with_the_photo_around_the_face(media, tiny_checkpoint, tmp_path,
                                                                             capsys):
    out = tmp_path / "talk.mp4"
    assert generate(media, tiny_checkpoint, out) == 0
    assert "192x108 (pasted back into the photo)" in capsys.readouterr().out
    info = probe_video(out)
    assert (info["width"], info["height"], info["frames"]) == (192, 108, 5)
    frames = read_video_frames(out) * 255  # (5, 108, 192, 3) 0..255
    photo = torch.from_numpy(np.array(Image.open(media / "photo.png"))).float()
    # The centre crop is x 42..150: beyond it the photo is untouched (up to the codec's error)...
    outside = torch.cat([frames[:, :, :40], frames[:, :, 152:]], dim=2)
    assert (outside - torch.cat([photo[:, :40], photo[:, 152:]], dim=1)).abs().mean() < 3
    # ...inside it is the random model's animation, nothing like the photo.
    assert (frames[:, 30:80, 80:110] - photo[30:80, 80:110]).abs().mean() > 10


def test_no_paste_back_keeps_the_square_and_max_size_caps_the_photo(media, tiny_checkpoint, tmp_path):
    square = tmp_path / "square.mp4"
    assert generate(media, tiny_checkpoint, square, "photo.png", "mask.png", "--no-paste-back") == 0
    assert (probe_video(square)["width"], probe_video(square)["height"]) == (64, 64)
    capped = tmp_path / "capped.mp4"
    assert generate(media, tiny_checkpoint, capped, "photo.png", "mask.png", "--max-size", "96") == 0
    assert (probe_video(capped)["width"], probe_video(capped)["height"]) == (96, 54)


def test_an_odd_sized_photo_loses_its_odd_row_and_column(media, tiny_checkpoint, tmp_path):
    out = tmp_path / "odd.mp4"
    assert generate(media, tiny_checkpoint, out, "odd.png", "odd_mask.png") == 0
    info = probe_video(out)
    assert (info["width"], info["height"]) == (192, 108)  # not 194x110 padded by the writer


def test_a_face_crop_of_a_large_photo_comes_back_at_the_capped_size(media, tiny_checkpoint, tmp_path):
    out = tmp_path / "astronaut.mp4"
    assert generate(media, tiny_checkpoint, out, "astronaut.png", None, "--max-size", "640") == 0
    info = probe_video(out)
    assert (info["width"], info["height"], info["frames"]) == (640, 360, 5)
    first = read_video_frames(out, max_frames=1)[0] * 255
    assert (first[:, :220] - 70).abs().mean() < 3  # the canvas left of the astronaut is untouched
