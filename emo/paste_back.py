"""Pasting the animated square back into the user's photo.

A model animates a square crop of the photo (`emo.runtime.reference.prepare_portrait`:
`info["box"]` is the square in source pixels, and may reach outside the photo where the crop
was padded). `PasteBack` puts every generated frame back where its square came from: resized
from the model's S x S to the box's size, blended into the photo through a feathered mask that
is 1 over the animated region and falls smoothly to 0 before the crop's border, so the photo
around it is untouched and no box edge shows.

The mask (see `blend_mask`):
- region "crop" (default): all of the crop the model animates (the head nods, hair and neck
  move with it), inset so that it reaches 0 a little inside the crop's border; the model's
  outermost pixels are its least reliable (convolution padding) and would otherwise meet the
  photo in a hard line.
- region "face": only the face region (the face box grown by the face locator's margin,
  `emo.runtime.reference.FACE_REGION_EXPANSION`) plus the feather; the rest of the crop stays
  the still photo. For models whose background drifts or blurs.
The feather ramps with a smoothstep (3t^2 - 2t^3, zero slope at both ends), so the composite's
gradient has no kink where the ramp starts or ends. No feather is needed on a side where the
crop touches or passes the photo's border: there is nothing of the photo beyond it to meet.

Colour: a model may shift the brightness or tint of its whole frame (a VAE round trip, a
drifting clip). `colour_match` estimates, per frame and channel, the median difference between
the photo and the generated frame where the photo shows through (mask < 1 inside the crop) and
adds it to the generated frame, so the face keeps the photo's exposure across the seam.

Streaming: `paste_frames(chunks)` composites an iterable of (n, S, S, 3) chunks into
(m, H, W, 3) chunks of at most `max_frames` frames (by default as many as fit in
`CHUNK_BYTES`), so memory is bounded per chunk, never the whole video. `paste(frames, out=...)`
writes into a preallocated tensor (ComfyUI's IMAGE batch).

Images are float32 (H, W, 3) in 0..1 on the CPU (ComfyUI's IMAGE layout); boxes are
(x0, y0, x1, y1) pixels, x1/y1 exclusive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator

import torch

from .faces.boxes import grow_box
from .image import resize

logger = logging.getLogger(__name__)

REGIONS = ("crop", "face")
DEFAULT_FEATHER = 0.12  # width of the blend ramp, as a fraction of the crop's side
# The mask reaches 0 this far inside the crop's border (fraction of the side, at least
# MIN_INSET_PIXELS output pixels): the model's border pixels are not pasted.
BORDER_INSET = 0.02
MIN_INSET_PIXELS = 2
# Face region of the "face" mask: the face box grown by this per side (the face locator's margin,
# emo.runtime.reference.FACE_REGION_EXPANSION, where the model moves the face).
FACE_REGION_GROWTH = 0.2
DEFAULT_MAX_SIZE = 1920  # long side of a pasted-back video, unless the user says otherwise
CHUNK_BYTES = 256 * 2 ** 20  # paste_frames yields chunks of at most this many bytes of frames


def output_size(height: int, width: int, max_size: int | None = None, even: bool = False) -> tuple[int, int]:
    """The size (height, width) of a pasted-back video of a `width` x `height` photo.

    max_size: the long side's cap (None or 0: no cap); a larger photo is scaled down, keeping
    its aspect ratio. even: both sides even (yuv420p video needs them): a photo that fits is
    trimmed by its odd last row/column (1920x1081 -> 1920x1080, no resampling of the photo), a
    scaled one is rounded to even sides.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"paste-back: the photo's {name} must be a positive number of pixels, got {value!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0
                                 or (0 < max_size < 16)):
        raise ValueError(f"paste-back: the maximum output size must be a whole number of pixels >= 16 (or 0 for "
                         f"no limit), got {max_size!r}")
    scale = min(1.0, max_size / max(height, width)) if max_size else 1.0
    if scale >= 1.0:
        if even:
            height, width = max(2, height - height % 2), max(2, width - width % 2)
        return height, width
    step = 2 if even else 1
    return (max(step, step * round(height * scale / step)), max(step, step * round(width * scale / step)))


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ramp(length: int, start: int, outer: tuple[float | None, float | None],
          inner: tuple[float, float]) -> torch.Tensor:
    """A 1-D blend profile over pixels start .. start + length - 1 (pixel centres at +0.5):
    1 between inner[0] and inner[1], 0 outside outer, a smoothstep between; a side whose outer
    edge is None has no ramp (1 up to the end)."""
    centres = torch.arange(start, start + length, dtype=torch.float64) + 0.5
    profile = torch.ones(length, dtype=torch.float64)
    if outer[0] is not None:
        profile = profile * _smoothstep((centres - outer[0]) / max(inner[0] - outer[0], 1e-9))
    if outer[1] is not None:
        profile = profile * _smoothstep((outer[1] - centres) / max(outer[1] - inner[1], 1e-9))
    return profile.float()


class PasteBack:
    """Composites generated square frames into the photo they were cropped from.

    source_image: the photo (H, W, 3) (or (1, H, W, 3); an alpha channel is dropped), 0..1.
        It may be a rescaled copy of the photo `info` was made from (same aspect ratio): the
        box is scaled with it.
    info: the crop info of `prepare_portrait` / `prepare_reference` ("box", "source_height",
        "source_width"; "face_box" for region "face").
    feather: width of the blend ramp as a fraction of the crop's side (0 = a hard edge at the
        inset border, for comparisons).
    region: "crop" or "face" (see the module's docstring).
    colour_match: shift each generated frame's colour to the photo's where they meet.
    max_size, even: the output size, see `output_size` (default: the photo's own size).
    """

    def __init__(self, source_image: torch.Tensor, info: dict, *, feather: float = DEFAULT_FEATHER,
                 region: str = "crop", colour_match: bool = True, max_size: int | None = None,
                 even: bool = False):
        source = _as_photo(source_image)
        if region not in REGIONS:
            raise ValueError(f"paste-back: unknown region {region!r}; choose one of {', '.join(REGIONS)}")
        if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not (
                math.isfinite(feather) and 0.0 <= feather <= 0.5):
            raise ValueError(f"paste-back: feather must be a fraction of the crop's side from 0 to 0.5, "
                             f"got {feather!r}")
        height, width = source.shape[:2]
        box = _source_box(info, height, width)
        out_h, out_w = output_size(height, width, max_size, even)
        if (out_h, out_w) != (height, width):
            trimmed = out_h <= height and out_w <= width and (height - out_h) < 2 and (width - out_w) < 2
            if trimmed:
                source = source[:out_h, :out_w]  # an odd last row/column dropped, the rest untouched
                logger.info("paste-back: %dx%d photo trimmed to %dx%d (even sides for the video)",
                            width, height, out_w, out_h)
            else:
                logger.info("paste-back: %dx%d photo scaled to %dx%d (max size %s)", width, height, out_w, out_h,
                            max_size)
                source = resize(source, out_h, out_w)
                scale_x, scale_y = out_w / width, out_h / height
                box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
        self.source = source.contiguous()  # (H, W, 3) at the output size
        self.height, self.width = out_h, out_w
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise ValueError(f"paste-back: the crop box {info['box']} is {x1 - x0}x{y1 - y0} pixels at the "
                             f"{out_w}x{out_h} output; it is too small to paste into")
        self.box = (x0, y0, x1, y1)  # in output pixels; may reach outside the photo
        face_box = None
        if region == "face":
            if info.get("face_box") is None:
                raise ValueError("paste-back: region 'face' needs the face box, and this reference has none (no face "
                                 "was detected: a centre or pad crop); use region 'crop'")
            fx0, fy0, fx1, fy1 = (float(v) for v in info["face_box"])
            sx, sy = out_w / int(info["source_width"]), out_h / int(info["source_height"])
            face_box = grow_box((fx0 * sx, fy0 * sy, fx1 * sx, fy1 * sy), FACE_REGION_GROWTH)
        self.region, self.feather, self.colour_match = region, float(feather), bool(colour_match)
        # The part of the box inside the photo, and the blend mask over it.
        self.visible = (max(x0, 0), max(y0, 0), min(x1, out_w), min(y1, out_h))
        vx0, vy0, vx1, vy1 = self.visible
        if vx1 <= vx0 or vy1 <= vy0:
            raise ValueError(f"paste-back: the crop box {info['box']} lies outside the {width}x{height} photo")
        self.mask = blend_mask(self.box, (out_h, out_w), feather=self.feather, face_box=face_box)
        # Blend only where the mask is > 0 (its bounding rectangle inside the visible box).
        rows = torch.nonzero(self.mask.amax(dim=1) > 0).flatten()
        cols = torch.nonzero(self.mask.amax(dim=0) > 0).flatten()
        if rows.numel() == 0:
            raise ValueError(f"paste-back: the blend mask is empty for the {x1 - x0} px crop with feather "
                             f"{feather}; lower the feather")
        self.support = (vx0 + int(cols[0]), vy0 + int(rows[0]), vx0 + int(cols[-1]) + 1, vy0 + int(rows[-1]) + 1)
        sx0, sy0, sx1, sy1 = self.support
        self._weights = self.mask[sy0 - vy0:sy1 - vy0, sx0 - vx0:sx1 - vx0, None].contiguous()  # (h, w, 1)
        self._photo = self.source[sy0:sy1, sx0:sx1]  # (h, w, 3)
        # Where the photo shows through inside the support: the colour-match reference.
        self._photo_shows = self._weights[..., 0] < 1.0

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the composited frames."""
        return self.height, self.width

    def full_mask(self) -> torch.Tensor:
        """The blend mask over the whole output (H, W): 1 = generated, 0 = photo."""
        full = torch.zeros(self.height, self.width)
        vx0, vy0, vx1, vy1 = self.visible
        full[vy0:vy1, vx0:vx1] = self.mask
        return full

    def _generated(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (n, S, S, 3) resized to the box and cut to the support: (n, h, w, 3)."""
        x0, y0, x1, y1 = self.box
        sx0, sy0, sx1, sy1 = self.support
        scaled = resize(frames, y1 - y0, x1 - x0)  # antialiased bicubic, clipped to 0..1
        return scaled[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]

    def colour_offsets(self, generated: torch.Tensor) -> torch.Tensor:
        """Per-frame, per-channel shift (n, 3) that brings `generated` (n, h, w, 3, the support)
        to the photo where the photo shows through; zeros when it nowhere does."""
        if not self.colour_match or not bool(self._photo_shows.any()):
            return torch.zeros(generated.shape[0], 3)
        difference = self._photo[self._photo_shows][None] - generated[:, self._photo_shows]  # (n, P, 3)
        return difference.median(dim=1).values

    def paste(self, frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """frames (n, S, S, 3) 0..1 -> the photo with each frame blended in, (n, H, W, 3) float32.
        out: a preallocated (n, H, W, 3) tensor to write into (returned)."""
        frames = _as_frames(frames)
        n = frames.shape[0]
        if out is None:
            out = torch.empty(n, self.height, self.width, 3, dtype=torch.float32)
        elif tuple(out.shape) != (n, self.height, self.width, 3):
            raise ValueError(f"paste-back: the output tensor is {tuple(out.shape)}; expected "
                             f"{(n, self.height, self.width, 3)}")
        out.copy_(self.source.expand(n, -1, -1, -1))
        generated = self._generated(frames.float())
        offsets = self.colour_offsets(generated)
        if offsets.abs().max() > 0:
            generated = (generated + offsets[:, None, None, :]).clamp(0.0, 1.0)
        sx0, sy0, sx1, sy1 = self.support
        out[:, sy0:sy1, sx0:sx1] = torch.lerp(self._photo.expand_as(generated), generated, self._weights)
        return out

    def frames_per_chunk(self, budget_bytes: int = CHUNK_BYTES) -> int:
        """How many composited frames fit in `budget_bytes` (at least 1)."""
        return max(1, budget_bytes // (self.height * self.width * 3 * 4))

    def paste_frames(self, chunks: Iterable[torch.Tensor], max_frames: int | None = None) -> Iterator[torch.Tensor]:
        """Stream: chunks of generated frames (n, S, S, 3) -> composited chunks (m, H, W, 3) of at
        most `max_frames` frames (default: `frames_per_chunk()`); one chunk in memory at a time."""
        step = max_frames or self.frames_per_chunk()
        for chunk in chunks:
            chunk = _as_frames(chunk)
            for start in range(0, chunk.shape[0], step):
                yield self.paste(chunk[start:start + step])


def blend_mask(box, size: tuple[int, int], *, feather: float = DEFAULT_FEATHER, face_box=None) -> torch.Tensor:
    """The blend mask over the part of `box` inside an image of `size` (height, width):
    float32 (visible height, visible width), 1 = generated, 0 = photo.

    box: the crop (x0, y0, x1, y1) in the image's pixels (integers; may reach outside). The mask
    is 0 from BORDER_INSET of the side inwards of every crop side that lies inside the image,
    rises over `feather` x side with a smoothstep, and is 1 beyond; sides on or past the image's
    border get no ramp. face_box: the region to animate instead of the whole crop (grown face
    box, in the image's pixels): 1 inside it, falling to 0 over the feather outside it, kept
    within the crop's inset border.
    """
    height, width = size
    x0, y0, x1, y1 = box
    visible = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    side = max(x1 - x0, y1 - y0)
    inset = max(MIN_INSET_PIXELS, BORDER_INSET * side)
    ramp = feather * side

    def axis(lo: int, hi: int, extent: int, start: int, stop: int, face: tuple[float, float] | None):
        # Outer edges: where the mask reaches 0 (None: that side meets the image border).
        outer_lo = lo + inset if lo > 0 else None
        outer_hi = hi - inset if hi < extent else None
        if face is None:
            inner_lo = outer_lo + ramp if outer_lo is not None else -math.inf
            inner_hi = outer_hi - ramp if outer_hi is not None else math.inf
        else:
            # 1 over the face region, 0 from the feather outside it, never past the crop's inset
            # border: where the region nears that border the ramp moves inwards, keeping its width.
            inner_lo = face[0] if face[0] > 0 else -math.inf
            inner_hi = face[1] if face[1] < extent else math.inf
            if outer_lo is not None or inner_lo > -math.inf:
                limit = outer_lo if outer_lo is not None else 0.0
                outer_lo = max(limit, inner_lo - ramp)
                inner_lo = max(inner_lo, outer_lo + ramp)
            if outer_hi is not None or inner_hi < math.inf:
                limit = outer_hi if outer_hi is not None else float(extent)
                outer_hi = min(limit, inner_hi + ramp)
                inner_hi = min(inner_hi, outer_hi - ramp)
        if outer_lo is not None and outer_hi is not None and inner_lo > inner_hi:
            # A crop too small for its ramps: the two ramps meet in the middle.
            inner_lo = inner_hi = (outer_lo + outer_hi) / 2
        return _ramp(stop - start, start, (outer_lo, outer_hi), (inner_lo, inner_hi))

    face_x = face_y = None
    if face_box is not None:
        fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
        face_x, face_y = (fx0, fx1), (fy0, fy1)
    columns = axis(x0, x1, width, visible[0], visible[2], face_x)
    rows = axis(y0, y1, height, visible[1], visible[3], face_y)
    return rows[:, None] * columns[None, :]


def seam_report(composite: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, band: int = 3) -> dict:
    """How visible the paste is, from one composited frame (H, W, 3), the photo (H, W, 3) and the
    blend mask over the whole frame (H, W).

    outside_error: mean |composite - photo| over the `band` pixels just outside the mask
        (should be 0: the photo is untouched there).
    seam_step: the largest change from one pixel to the next of the difference composite -
        photo, averaged along the mask's sides (rows crossing the left/right ramps, columns
        crossing the top/bottom ones), over the ramps and `band` pixels either side: the step a
        straight seam makes, with the content's own texture averaged out.
    photo_gradient: the photo's mean absolute difference between neighbouring pixels (its
        ordinary detail, the scale a seam step is seen against); seam_ratio = seam_step /
        photo_gradient (below ~1: the seam is within the photo's own pixel-to-pixel variation).
    """
    composite, source, mask = composite.float(), source.float(), mask.float()
    support = mask > 0
    rows_any, cols_any = support.any(dim=1), support.any(dim=0)
    if not bool(rows_any.any()):
        raise ValueError("seam_report: the mask is empty")
    r = torch.nonzero(rows_any).flatten()
    c = torch.nonzero(cols_any).flatten()
    r0, r1, c0, c1 = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
    height, width = mask.shape
    lo_r, hi_r, lo_c, hi_c = max(0, r0 - band), min(height, r1 + band), max(0, c0 - band), min(width, c1 + band)
    near = torch.zeros_like(support)
    near[lo_r:hi_r, lo_c:hi_c] = True
    outside = near & ~support
    difference = composite - source  # (H, W, 3)
    outside_error = float(difference[outside].abs().mean()) if bool(outside.any()) else 0.0
    full = mask >= 1.0 - 1e-6
    rows_full = torch.nonzero(full.any(dim=1)).flatten()
    cols_full = torch.nonzero(full.any(dim=0)).flatten()
    steps = []
    for lines, axis, lo, hi in ((rows_full, 1, lo_c, hi_c), (cols_full, 0, lo_r, hi_r)):
        if lines.numel() == 0:
            continue
        # The difference and the mask averaged along the side, as profiles across it.
        picked_difference = difference.index_select(1 - axis, lines).narrow(axis, lo, hi - lo)
        profile = picked_difference.mean(dim=1 - axis)  # (length, 3)
        weights = mask.index_select(1 - axis, lines).narrow(axis, lo, hi - lo).amax(dim=1 - axis)  # (length,)
        seam = (weights[1:] < 1.0 - 1e-6) | (weights[:-1] < 1.0 - 1e-6)  # steps touching the ramp or outside it
        if bool(seam.any()):
            steps.append(profile.diff(dim=0).abs().amax(dim=1)[seam].max())
    seam_step = float(max(steps)) if steps else 0.0
    ramp = (mask >= 0.2) & (mask < 1.0 - 1e-6)
    ramp_colour_offset = 0.0
    if bool(ramp.any()):
        generated_minus_photo = difference[ramp] / mask[ramp][:, None]  # (P, 3)
        ramp_colour_offset = float(generated_minus_photo.median(dim=0).values.abs().max())
    photo_gradient = float(torch.cat([source.diff(dim=0).abs().flatten(), source.diff(dim=1).abs().flatten()]).mean())
    return {"outside_error": outside_error, "seam_step": seam_step, "photo_gradient": photo_gradient,
            "seam_ratio": seam_step / max(photo_gradient, 1e-12), "ramp_colour_offset": ramp_colour_offset}


def _as_photo(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"paste-back: the photo must be an image tensor (H, W, 3), got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] >= 1:
        if image.shape[0] > 1:
            logger.info("paste-back: got %d photos, using the first", image.shape[0])
        image = image[0]
    if image.dim() != 3 or image.shape[-1] not in (3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"paste-back: the photo must be an image (H, W, 3) with values 0..1, got {tuple(image.shape)}")
    if image.shape[-1] == 4:
        logger.info("paste-back: the photo's alpha channel is dropped")
    return image[..., :3].detach().to("cpu", torch.float32)


def _as_frames(frames) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"paste-back: expected generated frames (n, S, S, 3), got {shape}")
    if frames.shape[1] != frames.shape[2]:
        raise ValueError(f"paste-back: the generated frames are {frames.shape[2]}x{frames.shape[1]}, not square; "
                         "give the model's square frames (EMOSampler's output)")
    return frames.detach().cpu()


def _source_box(info: dict, height: int, width: int) -> tuple[float, float, float, float]:
    """info's crop box in pixels of the given photo (scaled when the photo is a resized copy)."""
    if not isinstance(info, dict) or "box" not in info:
        raise ValueError("paste-back: the reference's crop info has no box; make the reference with LoadReference / "
                         "emo.runtime.reference.prepare_portrait")
    x0, y0, x1, y1 = (float(v) for v in info["box"])
    source_h = int(info.get("source_height", height))
    source_w = int(info.get("source_width", width))
    if (source_h, source_w) == (height, width):
        return x0, y0, x1, y1
    if abs(source_w / source_h - width / height) > 0.01 * (width / height):
        raise ValueError(f"paste-back: the photo is {width}x{height} but the reference was cropped from a "
                         f"{source_w}x{source_h} image; give the same photo (or a resized copy of it)")
    sx, sy = width / source_w, height / source_h
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy
