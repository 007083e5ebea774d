"""EMO Paste Back (EMOPasteBack), called directly: LoadReference's crop of a 16:9 photo, the
sampler's square frames back in the photo, chunked into a preallocated output."""

from __future__ import annotations

import pytest
import torch

from emo.paste_back import PasteBack, seam_report
from nodes import comfy_services as services
from nodes import paste_back as paste_node
from nodes.audio import EMOAudioEncode
from nodes.paste_back import EMOPasteBack
from nodes.reference import EMOLoadReference
from nodes.sampler import EMOSampler


@pytest.fixture(scope="module")
def landscape(astronaut):
    """The astronaut on a textured 16:9 canvas (640x360): IMAGE [1, 360, 640, 3]."""
    ys = torch.linspace(0, 1, 360)[:, None, None]
    xs = torch.linspace(0, 1, 640)[None, :, None]
    canvas = 0.25 + 0.3 * ys * torch.tensor([1.0, 0.6, 0.2]) + 0.3 * xs * torch.tensor([0.2, 0.5, 1.0])
    canvas = canvas.expand(360, 640, 3).clone()
    canvas[:, 300:600] = torch.nn.functional.interpolate(astronaut.permute(2, 0, 1)[None], size=(360, 300),
                                                         mode="bilinear", antialias=True)[0].permute(1, 2, 0)
    return canvas[None]


@pytest.fixture(scope="module")
def reference(landscape):
    reference, _ = EMOLoadReference().prepare(landscape, 64, "face")
    return reference


def frames_of(reference, count: int = 11, shift: float = 0.06) -> torch.Tensor:
    """Stand-ins for the sampler's frames: the reference, brighter, with noise that moves."""
    generator = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.randn(count, 64, 64, 3, generator=generator)
    return (reference.image[None] + shift + noise).clamp(0, 1)


def test_the_frames_come_back_at_the_photo_size_with_the_photo_around_them(landscape, reference, monkeypatch):
    monkeypatch.setattr(paste_node, "FRAMES_PER_STEP", 4)  # 11 frames: steps of 4, 4, 3
    frames = frames_of(reference)
    (out,) = EMOPasteBack().paste(frames, landscape, reference, 0.12)
    assert out.shape == (11, 360, 640, 3) and out.dtype == torch.float32
    library = PasteBack(landscape, reference.info, feather=0.12)
    assert torch.equal(out, library.paste(frames))  # chunked == all at once
    mask = library.full_mask()
    assert torch.equal(out[:, mask == 0], landscape[0][mask == 0].expand(11, -1, -1))
    x0, y0, x1, y1 = reference.info["box"]
    centre = out[:, (y0 + y1) // 2, (x0 + x1) // 2]
    assert (centre[1:] - centre[:-1]).abs().max() > 0.01  # the face region changes from frame to frame
    report = seam_report(out[0], landscape[0], mask)
    # The floor is what a 64 px square costs by itself: the reference's own pixels pasted back
    # unchanged (the crop, 161 px here, through 64 px and back) already step at the seam (ratio
    # ~2 here; 0.5 for a 256 px square). The brighter, noisy frames must add nothing to that.
    floor = seam_report(library.paste(reference.image[None])[0], landscape[0], mask)
    assert report["outside_error"] == 0 and report["seam_ratio"] < 1.1 * floor["seam_ratio"]


def test_feather_and_region_change_the_result(landscape, reference):
    # Full-resolution stand-ins (as after a square upscaler): the photo's own crop, brighter, so
    # that the only difference at the seam is the shift, not the detail a 64 px frame lacks.
    x0, y0, x1, y1 = reference.info["box"]
    assert x0 >= 0 and y0 >= 0 and x1 <= 640 and y1 <= 360
    frames = (landscape[:, y0:y1, x0:x1] + 0.06).clamp(0, 1).expand(2, -1, -1, -1)
    (soft,) = EMOPasteBack().paste(frames, landscape, reference, 0.2)
    (hard,) = EMOPasteBack().paste(frames, landscape, reference, 0.0, colour_match=False)
    (face,) = EMOPasteBack().paste(frames, landscape, reference, 0.12, region="face")
    assert not torch.equal(soft, hard) and not torch.equal(soft, face)
    hard_seam = seam_report(hard[0], landscape[0], PasteBack(landscape, reference.info, feather=0.0).full_mask())
    soft_seam = seam_report(soft[0], landscape[0], PasteBack(landscape, reference.info, feather=0.2).full_mask())
    assert hard_seam["seam_step"] > 5 * soft_seam["seam_step"]


def test_the_sampler_frames_chain_into_paste_back(emo_model, voice, landscape, reference):
    features = EMOAudioEncode().encode(voice, emo_model, 25.0)["result"][0]
    frames, fps = EMOSampler().sample(emo_model, reference, features, seed=1, steps=1, cfg=2.0, scheduler="ddim",
                                      frames_per_clip=12, motion_frames=2, unique_id="1")["result"]
    (out,) = EMOPasteBack().paste(frames, landscape, reference, 0.12)
    assert out.shape == (15, 360, 640, 3) and fps == 25.0
    assert torch.equal(out[:, :, :100], landscape[:, :, :100].expand(15, -1, -1, -1))


def test_interrupt_and_progress(landscape, reference, monkeypatch):
    bars = []
    original = services.Progress

    class Recording(original):
        def __init__(self, total):
            super().__init__(total)
            bars.append(self)

    monkeypatch.setattr(services, "Progress", Recording)
    EMOPasteBack().paste(frames_of(reference, count=10), landscape, reference, 0.12)
    assert bars[-1].total == 10 and bars[-1].current == 10
    services.request_interrupt()
    with pytest.raises(services.Interrupted):
        EMOPasteBack().paste(frames_of(reference, count=2), landscape, reference, 0.12)


def test_errors_name_the_node_and_the_fix(landscape, reference, astronaut):
    frames = frames_of(reference, count=1)
    with pytest.raises(ValueError, match="EMO Paste Back: the reference input must come from EMO Load Reference"):
        EMOPasteBack().paste(frames, landscape, "reference.png", 0.12)
    with pytest.raises(ValueError, match=r"EMO Paste Back: the photo is 512x512 but the reference was cropped from "
                                         r"a 640x360 image.*connect the image you gave EMO Load Reference"):
        EMOPasteBack().paste(frames, astronaut[None], reference, 0.12)
    with pytest.raises(ValueError, match=r"EMO Paste Back: frames must be an IMAGE batch"):
        EMOPasteBack().paste(frames[0], landscape, reference, 0.12)
    with pytest.raises(ValueError, match=r"EMO Paste Back: the generated frames are 32x64, not square"):
        EMOPasteBack().paste(frames[:, :, :32], landscape, reference, 0.12)


def test_declaration_follows_the_node_contract():
    types = EMOPasteBack.INPUT_TYPES()
    assert list(types["required"]) == ["frames", "image", "reference", "feather"]
    assert EMOPasteBack.RETURN_TYPES == ("IMAGE",) and EMOPasteBack.CATEGORY == "EMO/video"
    signature = EMOPasteBack.paste.__code__.co_varnames
    for section in types.values():
        for name, (kind, options) in section.items():
            assert options.get("tooltip") and name in signature
            if kind == "FLOAT":
                assert options["min"] <= options["default"] <= options["max"]
