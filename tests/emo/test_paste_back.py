"""Pasting the animated square back into the photo: geometry, an untouched photo outside the
feather, no visible seam, crops that leave the photo, odd and capped sizes, streaming."""

from __future__ import annotations

import pytest
import torch

from emo.image import prepare_reference, resize
from emo.paste_back import (BORDER_INSET, DEFAULT_FEATHER, MIN_INSET_PIXELS, PasteBack, blend_mask, output_size,
                            seam_report)


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth, textured photo (H, W, 3): a colour gradient plus blurred noise."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None, None]
    xs = torch.linspace(0, 1, width)[None, :, None]
    base = 0.2 + 0.5 * ys * torch.tensor([1.0, 0.4, 0.2]) + 0.3 * xs * torch.tensor([0.1, 0.6, 0.9])
    noise = torch.rand(1, 3, height // 4 + 1, width // 4 + 1, generator=generator)
    texture = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
    return (base + 0.15 * (texture - 0.5)).clamp(0, 1)


def info_for(box, height: int, width: int, face_box=None) -> dict:
    return {"mode": "face", "box": box, "source_height": height, "source_width": width, "face_box": face_box}


def crop_of(source: torch.Tensor, box, size: int) -> torch.Tensor:
    """The square `box` of the photo at size x size (in the photo: no padding needed)."""
    x0, y0, x1, y1 = box
    return resize(source[y0:y1, x0:x1], size, size)


# ---- geometry -----------------------------------------------------------------------------------
def test_a_frame_lands_at_its_box_scaled_to_the_box_side():
    source = photo(120, 200)
    box = (100, 20, 180, 100)  # 80 px square inside the photo
    frames = torch.zeros(1, 40, 40, 3)
    frames[0, 16:24, 8:16] = 1.0  # a white block: frame pixels x 8..16, y 16..24 -> box x 16..32, y 32..48
    paste = PasteBack(source, info_for(box, 120, 200), colour_match=False)
    out = paste.paste(frames)[0]
    assert out.shape == (120, 200, 3) and paste.size == (120, 200)
    white = (out.min(dim=-1).values > 0.95).nonzero().float()
    assert white[:, 1].mean().item() == pytest.approx(100 + 24 - 0.5, abs=0.6)  # x centre
    assert white[:, 0].mean().item() == pytest.approx(20 + 40 - 0.5, abs=0.6)  # y centre
    assert len(white) == pytest.approx(16 * 16, rel=0.25)


def test_the_photo_is_untouched_outside_the_feather_and_the_frame_is_whole_inside():
    source = photo(120, 200)
    box = (100, 20, 180, 100)
    frames = torch.full((2, 64, 64, 3), 0.5)
    paste = PasteBack(source, info_for(box, 120, 200), colour_match=False)
    out = paste.paste(frames)
    mask = paste.full_mask()
    assert torch.equal(out[:, mask == 0], source[mask == 0].expand(2, -1, -1))
    assert torch.allclose(out[:, mask == 1], torch.full_like(out[:, mask == 1], 0.5), atol=1e-6)
    # The mask: 0 outside the crop and in its inset border, 1 after the ramp, a smoothstep between.
    side, inset = 80, max(MIN_INSET_PIXELS, BORDER_INSET * 80)
    assert mask[:, :100].max() == 0 and mask[:, 180:].max() == 0 and mask[:20].max() == 0
    assert mask[60, 100 + int(inset) - 1] == 0
    ramp_end = 100 + inset + DEFAULT_FEATHER * side
    assert mask[60, int(ramp_end) + 1] == 1 and 0 < mask[60, int(100 + inset + 5)] < 1
    row = mask[60, 100:140]
    assert (row.diff() >= 0).all()  # rises monotonically


def test_a_feathered_paste_has_no_seam_a_hard_one_has():
    """Frames = the photo's own crop, brighter and noisy: a hard paste shows the whole brightness
    step at its edge; the feather spreads it over its ramp (a smoothstep's steepest slope is 1.5
    / width), and colour matching removes most of what is left."""
    source = photo(180, 320)
    box = (150, 30, 270, 150)
    generator = torch.Generator().manual_seed(1)
    frames = (crop_of(source, box, 64)[None] + 0.08 + 0.02 * torch.randn(1, 64, 64, 3, generator=generator))
    info = info_for(box, 180, 320)
    reports = {}
    for name, options in {"hard": dict(feather=0.0, colour_match=False), "feathered": dict(colour_match=False),
                          "matched": dict()}.items():
        paste = PasteBack(source, info, **options)
        reports[name] = seam_report(paste.paste(frames.clamp(0, 1))[0], source, paste.full_mask())
    for report in reports.values():
        assert report["outside_error"] == 0.0
    assert reports["hard"]["seam_step"] > 0.06 and reports["hard"]["seam_ratio"] > 3
    assert reports["feathered"]["seam_step"] < 0.2 * reports["hard"]["seam_step"]
    assert reports["matched"]["seam_step"] < 0.7 * reports["feathered"]["seam_step"]
    assert reports["matched"]["seam_ratio"] < 1.0  # below the photo's own pixel-to-pixel variation


def test_colour_match_removes_a_brightness_shift_of_the_model():
    source = photo(180, 320)
    box = (150, 30, 270, 150)
    frames = (crop_of(source, box, 120)[None] + torch.tensor([0.1, -0.05, 0.03])).clamp(0, 1)
    info = info_for(box, 180, 320)
    matched = PasteBack(source, info).paste(frames)[0]
    shifted = PasteBack(source, info, colour_match=False).paste(frames)[0]
    inside = (slice(70, 110), slice(190, 230))
    assert (shifted[inside] - source[inside]).abs().mean() > 0.05
    assert (matched[inside] - source[inside]).abs().mean() < 0.01


# ---- crops that leave the photo, pad mode, the face region ---------------------------------------------
def test_a_crop_reaching_outside_the_photo_blends_only_where_the_photo_continues():
    source = photo(100, 160)
    box = (-30, -20, 70, 80)  # a face near the top-left corner: the crop was padded
    frames = torch.full((1, 32, 32, 3), 0.9)
    paste = PasteBack(source, info_for(box, 100, 160), colour_match=False)
    out = paste.paste(frames)[0]
    mask = paste.full_mask()
    assert out.shape == (100, 160, 3)
    # No ramp on the sides beyond the photo's border: generated up to the edge...
    assert mask[0, 0] == 1 and mask[30, 0] == 1 and mask[0, 30] == 1
    # ...a ramp on the sides inside it, and the photo beyond the crop.
    assert mask[30, 69] == 0 and mask[79, 30] == 0 and 0 < mask[30, 62] < 1
    assert torch.equal(out[:, 70:], source[:, 70:]) and torch.equal(out[80:], source[80:])
    assert torch.allclose(out[:40, :40], torch.full((40, 40, 3), 0.9))


def test_pad_mode_gives_the_photo_back_at_its_own_aspect():
    source = photo(60, 100)
    square, info = prepare_reference(source, 64, "pad")
    assert info["box"] == (0, -20, 100, 80)
    out = PasteBack(source, info, colour_match=False).paste(square[None])[0]
    assert out.shape == (60, 100, 3)
    # Every side of the crop is on or beyond the photo's border: all of it is the generated frame.
    assert torch.allclose(out, resize(square, 100, 100)[20:80], atol=1e-6)
    assert (out - source).abs().mean() < 0.02  # and the round trip through 64 px is close to the photo


def test_face_region_animates_the_face_and_keeps_the_rest_of_the_crop():
    source = photo(200, 300)
    box, face = (100, 20, 260, 180), (150, 70, 210, 130)
    frames = torch.full((1, 64, 64, 3), 0.95)
    paste = PasteBack(source, info_for(box, 200, 300, face_box=face), region="face", colour_match=False)
    out, mask = paste.paste(frames)[0], paste.full_mask()
    assert mask[100, 180] == 1 and mask[75, 155] == 1  # the face
    assert mask[100, 108] == 0 and mask[28, 180] == 0  # the crop's border: the photo
    assert torch.equal(out[mask == 0], source[mask == 0])
    crop_mask = PasteBack(source, info_for(box, 200, 300, face_box=face), colour_match=False).full_mask()
    assert mask.sum() < 0.6 * crop_mask.sum()
    with pytest.raises(ValueError, match="region 'face' needs the face box.*use region 'crop'"):
        PasteBack(source, info_for(box, 200, 300), region="face")


def test_blend_mask_ramps_meet_when_the_crop_is_small():
    mask = blend_mask((10, 10, 20, 20), (40, 40), feather=0.5)
    assert mask.shape == (10, 10) and 0 < mask.max() <= 1 and mask[0, 0] == 0


# ---- sizes ----------------------------------------------------------------------------------------------
def test_output_size_caps_the_long_side_and_evens_odd_sides():
    assert output_size(1080, 1920) == (1080, 1920)
    assert output_size(1081, 1920, even=True) == (1080, 1920)  # trimmed, not resampled
    assert output_size(1081, 1920) == (1081, 1920)
    assert output_size(4000, 6000, 1920) == (1280, 1920)
    assert output_size(6000, 4000, 1920, even=True) == (1920, 1280)
    assert output_size(1001, 3001, 1920, even=True) == (640, 1920)
    assert output_size(720, 1280, 1920) == (720, 1280)  # never scaled up
    assert output_size(720, 1280, 0) == (720, 1280)
    with pytest.raises(ValueError, match="maximum output size must be a whole number of pixels >= 16"):
        output_size(720, 1280, 8)


def test_an_odd_photo_is_trimmed_to_even_sides_without_moving_the_face():
    source = photo(91, 161)
    box = (60, 10, 124, 74)
    frames = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    odd = PasteBack(source, info_for(box, 91, 161), colour_match=False).paste(frames)[0]
    even = PasteBack(source, info_for(box, 91, 161), colour_match=False, even=True).paste(frames)[0]
    assert odd.shape == (91, 161, 3) and even.shape == (90, 160, 3)
    assert torch.equal(even, odd[:90, :160])


def test_a_large_photo_is_capped_and_the_box_follows():
    source = photo(400, 600)
    box = (300, 100, 460, 260)
    frames = torch.full((1, 32, 32, 3), 0.9)
    paste = PasteBack(source, info_for(box, 400, 600), colour_match=False, max_size=300, even=True)
    out = paste.paste(frames)[0]
    assert out.shape == (200, 300, 3) and paste.box == (150, 50, 230, 130)
    assert torch.allclose(out[85:95, 185:195], torch.full((10, 10, 3), 0.9))
    assert (out[:, :140] - resize(source, 200, 300)[:, :140]).abs().max() < 1e-6


def test_a_resized_copy_of_the_photo_scales_the_box_and_another_photo_is_refused():
    source = photo(100, 160)
    info = info_for((60, 10, 124, 74), 100, 160)
    double = PasteBack(resize(source, 200, 320), info, colour_match=False)
    assert double.size == (200, 320) and double.box == (120, 20, 248, 148)
    with pytest.raises(ValueError, match=r"the photo is 100x100 but the reference was cropped from a 160x100 image"):
        PasteBack(photo(100, 100), info)


# ---- streaming and errors --------------------------------------------------------------------------------
def test_streaming_in_chunks_gives_the_same_frames_as_all_at_once():
    source = photo(90, 160)
    box = (60, 10, 124, 74)
    generator = torch.Generator().manual_seed(3)
    frames = torch.rand(8, 32, 32, 3, generator=generator)
    paste = PasteBack(source, info_for(box, 90, 160))
    whole = paste.paste(frames)
    chunks = list(paste.paste_frames([frames[:5], frames[5:]], max_frames=2))
    assert [len(c) for c in chunks] == [2, 2, 1, 2, 1]
    assert torch.equal(torch.cat(chunks), whole)
    preallocated = torch.empty(8, 90, 160, 3)
    assert paste.paste(frames, out=preallocated) is preallocated and torch.equal(preallocated, whole)
    assert paste.frames_per_chunk(90 * 160 * 3 * 4 * 5) == 5 and paste.frames_per_chunk(1) == 1


def test_bad_inputs_say_what_to_give():
    source = photo(90, 160)
    info = info_for((60, 10, 124, 74), 90, 160)
    paste = PasteBack(source, info)
    with pytest.raises(ValueError, match="frames are 48x32, not square"):
        paste.paste(torch.zeros(1, 32, 48, 3))
    with pytest.raises(ValueError, match=r"expected generated frames \(n, S, S, 3\)"):
        paste.paste(torch.zeros(32, 32, 3))
    with pytest.raises(ValueError, match="feather must be a fraction"):
        PasteBack(source, info, feather=0.8)
    with pytest.raises(ValueError, match="unknown region 'hair'"):
        PasteBack(source, info, region="hair")
    with pytest.raises(ValueError, match="crop info has no box"):
        PasteBack(source, {})
    rgba = torch.cat([source, torch.ones(90, 160, 1)], dim=-1)
    assert torch.equal(PasteBack(rgba, info).source, source)
