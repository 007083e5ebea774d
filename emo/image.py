"""Loading, converting, resizing and cropping still images (the reference portrait).

Every image here is a torch float32 tensor in ComfyUI's IMAGE layout: [H, W, 3] (or a batch
[N, H, W, 3]) with values in 0..1, on the CPU. Pixel boxes are (x0, y0, x1, y1) with x1/y1
exclusive, in pixels of the image they refer to.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

CROP_MODES = ("face", "center", "pad")

# Pillow's 16-bit grayscale modes (little, big and native endian). Their samples span 0..65535.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Modes with an alpha channel ("RGBa"/"La" are premultiplied; Pillow un-premultiplies on convert).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def as_image(image: torch.Tensor, operation: str) -> torch.Tensor:
    """Check that `image` is one IMAGE and return it as [H, W, 3] float32.

    A batch [N, H, W, 3] gives its first image (logged when N > 1), so callers can pass ComfyUI's
    IMAGE batches directly. `operation` names the caller in error messages.
    """
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"{operation}: expected an image tensor [H, W, 3] with values 0..1, got "
            f"{type(image).__name__}; convert it with emo.image.from_pil or torch.as_tensor"
        )
    if image.dim() == 4:
        if image.shape[0] == 0:
            raise ValueError(f"{operation}: got an empty image batch {tuple(image.shape)}; pass at least one image")
        if image.shape[0] > 1:
            logger.info("%s: got a batch of %d images, using the first", operation, image.shape[0])
        image = image[0]
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"{operation}: expected an image of shape [H, W, 3] or [N, H, W, 3], got {tuple(image.shape)}; "
            "images use ComfyUI's channels-last RGB layout"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{operation}: the image has no pixels (shape {tuple(image.shape)})")
    return image.to(torch.float32)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file into a [H, W, 3] float32 tensor with values 0..1.

    Anything Pillow opens is accepted. EXIF orientation is applied, so the result is upright as
    photo viewers show it. Transparent images (RGBA, LA, palette with transparency) are
    composited over white; 16-bit grayscale keeps its full range (divided by 65535, not clipped
    at 255); CMYK and other colour spaces go through Pillow's RGB conversion. Multi-frame files
    (GIF, TIFF) give their first frame.

    Raises FileNotFoundError when nothing is at `path` and ValueError when the file is empty or
    not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"load_image: no file at '{path}' (resolved to '{path.resolve()}'); check the path and file name"
        )
    if path.is_dir():
        raise ValueError(f"load_image: '{path}' is a directory, expected an image file inside it")
    if path.stat().st_size == 0:
        raise ValueError(f"load_image: '{path}' is empty (0 bytes); re-export or copy the image again")
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now, inside the try, so truncated files fail here
            if getattr(pil, "n_frames", 1) > 1:
                logger.info("load_image: '%s' has %d frames, using the first", path, pil.n_frames)
            pil = ImageOps.exif_transpose(pil)
            return from_pil(pil)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        # Pillow reports broken files as OSError (truncated data) or SyntaxError (bad headers).
        raise ValueError(
            f"load_image: cannot read '{path}' as an image ({error}); expected a PNG, JPEG, WebP, "
            "BMP or TIFF file: re-save the image in one of those formats"
        ) from error


def from_pil(pil: Image.Image) -> torch.Tensor:
    """Convert a Pillow image to a [H, W, 3] float32 tensor with values 0..1.

    Alpha is composited over white (a transparent background becomes white, not black, which is
    what people expect from a cut-out portrait). 16-bit modes are divided by 65535; mode "I"
    (32-bit integers, which is how some readers deliver 16-bit data) is taken as 0..65535 and
    clipped; mode "F" is taken as 0..1 when its maximum is at most 1 and as 0..255 otherwise.
    """
    if pil.width == 0 or pil.height == 0:
        raise ValueError(f"from_pil: the image has no pixels ({pil.width}x{pil.height})")
    mode = pil.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(pil).astype(np.float32) / 65535.0
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "I":
        gray = np.clip(np.asarray(pil).astype(np.float32) / 65535.0, 0.0, 1.0)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "F":
        gray = np.asarray(pil).astype(np.float32)
        peak = float(np.nanmax(gray)) if gray.size else 0.0
        if peak > 1.0:
            gray = gray / 255.0
        rgb = np.repeat(np.clip(np.nan_to_num(gray), 0.0, 1.0)[:, :, None], 3, axis=2)
    elif mode in _ALPHA_MODES or "transparency" in pil.info:
        # "transparency" covers palette images and RGB/L PNGs with a tRNS chunk.
        rgba = np.asarray(pil.convert("RGBA")).astype(np.float32) / 255.0
        alpha = rgba[:, :, 3:4]
        rgb = rgba[:, :, :3] * alpha + (1.0 - alpha)
    else:
        rgb = np.asarray(pil.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))


def to_pil(image: torch.Tensor) -> Image.Image:
    """Convert a [H, W, 3] (or [1, H, W, 3]) image with values 0..1 to an 8-bit RGB Pillow image.

    Values outside 0..1 are clipped and the rest rounded to the nearest 8-bit level.
    """
    image = as_image(image, "to_pil")
    array = (image.detach().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize an image [H, W, 3] (or a batch [N, H, W, 3]) to [height, width, 3] (or [N, ...]).

    Uses antialiased bicubic interpolation in float, so downscaling does not alias and no 8-bit
    rounding is introduced; the result is clipped back to 0..1 (bicubic overshoots at edges).
    Aspect ratio is not preserved: crop first (see `prepare_reference`).
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"resize: {name} must be a positive integer number of pixels, got {value!r}")
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"resize: expected an image [H, W, 3] or a batch [N, H, W, 3], got {shape}")
    batched = image.dim() == 4
    batch = image if batched else image[None]
    if tuple(batch.shape[1:3]) == (height, width):
        return image.to(torch.float32)
    channels_first = batch.to(torch.float32).permute(0, 3, 1, 2)  # (N, 3, H, W)
    resized = F.interpolate(channels_first, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    result = resized.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()  # (N, height, width, 3)
    return result if batched else result[0]


def _square_start(center: float, side: int, extent: int) -> int:
    """First pixel of a `side`-long window centred on `center` along an axis of `extent` pixels.

    A window that fits is shifted to lie inside the axis; one longer than the axis is shifted so
    that it covers the whole axis, which keeps the edge padding as small as possible.
    """
    start = int(round(center - side / 2))
    if side <= extent:
        return min(max(start, 0), extent - side)
    return min(max(start, extent - side), 0)


def _crop_square(image: torch.Tensor, left: int, top: int, side: int) -> torch.Tensor:
    """Cut the square [top:top+side, left:left+side] out of [H, W, 3], replicating edge pixels
    for the parts that lie outside the image."""
    height, width = image.shape[:2]
    # Clamping the indices repeats the border row/column wherever the square leaves the image.
    rows = torch.arange(top, top + side).clamp(0, height - 1)
    cols = torch.arange(left, left + side).clamp(0, width - 1)
    return image.index_select(0, rows).index_select(1, cols)


def _check_face_box(face_box, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in face_box)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"prepare_reference: face_box must be four numbers (x0, y0, x1, y1) in pixels, got {face_box!r}"
        ) from error
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"prepare_reference: face_box {face_box!r} is empty or reversed; expected x0 < x1 and y0 < y1 in pixels"
        )
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(
            f"prepare_reference: face_box {face_box!r} lies outside the {width}x{height} image; "
            "give the box in pixels of this image (not normalised 0..1 coordinates)"
        )
    return x0, y0, x1, y1


def prepare_reference(
    image: torch.Tensor,
    size: int,
    crop: str = "face",
    *,
    face_padding: float = 0.6,
    face_box=None,
) -> tuple[torch.Tensor, dict]:
    """Crop the reference portrait to a square and resize it to [size, size, 3].

    image: [H, W, 3] or [N, H, W, 3] (the first image is used), values 0..1.
    size: output side in pixels; a positive multiple of 8 because the VAE works on an 8x smaller
        latent grid.
    crop:
        "face"   - a square centred on the face, `face_box` (found by the caller, e.g.
                   emo.runtime.reference.prepare_portrait). Its side is the face's larger side times
                   (1 + 2 * face_padding), i.e. `face_padding` face sizes of margin on each side.
                   The square is shifted to stay inside the image; where it is larger than the
                   image it extends past the border and that part repeats the edge pixels.
        "center" - the largest centred square (no detection).
        "pad"    - the whole image, padded to a square by repeating its edge pixels (not black:
                   a black frame would be copied into the video as content, while repeated edges
                   continue the background).
    face_padding: margin for "face", in face sizes per side (>= 0).
    face_box: (x0, y0, x1, y1) in source pixels; required by "face" mode.

    Returns (image [size, size, 3], info) where info has "mode", "box" (the square in source
    pixels, (x0, y0, x1, y1), which may reach outside the image where padding was used),
    "padded" (whether any pixel was replicated), "face_box" (or None), "source_height" and
    "source_width".
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 8 != 0:
        raise ValueError(
            f"prepare_reference: size must be a positive multiple of 8 (the latent grid is 8x smaller), "
            f"got {size!r}; use e.g. 512"
        )
    if crop not in CROP_MODES:
        raise ValueError(f"prepare_reference: unknown crop mode {crop!r}; expected one of {', '.join(CROP_MODES)}")
    image = as_image(image, "prepare_reference")
    height, width = image.shape[:2]
    used_face_box = None

    if crop == "face":
        if not isinstance(face_padding, (int, float)) or isinstance(face_padding, bool) or not (
            math.isfinite(face_padding) and face_padding >= 0
        ):
            raise ValueError(
                f"prepare_reference: face_padding must be a number >= 0 (face sizes of margin per side), "
                f"got {face_padding!r}"
            )
        if face_box is None:
            raise ValueError("prepare_reference: the face crop needs the face's box (face_box=...); find it with "
                             "emo.runtime.reference.prepare_portrait, which detects the face once, or use the "
                             "'center' or 'pad' crop")
        x0, y0, x1, y1 = _check_face_box(face_box, width, height)
        used_face_box = tuple(face_box)
        face_size = max(x1 - x0, y1 - y0)
        side = max(1, int(round(face_size * (1.0 + 2.0 * face_padding))))
        left = _square_start((x0 + x1) / 2, side, width)
        top = _square_start((y0 + y1) / 2, side, height)
    elif crop == "center":
        side = min(height, width)
        left, top = (width - side) // 2, (height - side) // 2
    else:  # "pad"
        side = max(height, width)
        # Negative offsets: the image sits in the middle and the rest is replicated edge.
        left, top = -((side - width) // 2), -((side - height) // 2)

    square = _crop_square(image, left, top, side)
    padded = left < 0 or top < 0 or left + side > width or top + side > height
    if padded:
        logger.info(
            "prepare_reference: the %s crop (%d px square) reaches outside the %dx%d image; edge pixels are repeated",
            crop,
            side,
            width,
            height,
        )
    info = {
        "mode": crop,
        "box": (left, top, left + side, top + side),
        "padded": padded,
        "face_box": used_face_box,
        "source_height": height,
        "source_width": width,
    }
    return resize(square, size, size), info
