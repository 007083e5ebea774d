"""Face alignment as insightface 0.7.3 computes it, in numpy: the 5-point similarity to the ArcFace
template, the square crops of its landmark/attribute models, and OpenCV 4.x's warpAffine.

Matrices are 2x3 float64 that map source (image) pixels to crop pixels, like OpenCV's
`warpAffine(src, M, size)`. Points are (x, y) in pixels.

Why our own warp: insightface crops with `cv2.warpAffine` (bilinear, black border), which OpenCV
4.x computes in fixed point (source positions in 1/32 pixel, 15-bit weights). OpenCV 5 changed it
to a float bilinear that differs by up to 4 levels on a few percent of the pixels, which moves the
identity embedding by ~2e-3. `warp_affine` here is the 4.x arithmetic, so the crops match Hallo's
bit for bit whatever OpenCV is installed.
"""

from __future__ import annotations

import numpy as np

# insightface's ArcFace destination points for a 112x112 crop: left eye, right eye, nose tip,
# left and right mouth corners (image left/right), float32 as insightface stores them.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)

# OpenCV 4.x warpAffine constants: AB_BITS (positions in 1/1024 px), INTER_BITS (1/32 px bilinear
# table), INTER_REMAP_COEF_BITS (weights sum to 2^15).
_AB_SCALE = 1 << 10
_INTER_BITS = 5
_INTER_TAB = 1 << _INTER_BITS
_COEF_BITS = 15


def similarity_matrix(src, dst) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping the
    points `src` (N, 2) onto `dst` (N, 2): Umeyama (PAMI 1991), the estimate scikit-image's
    `SimilarityTransform.estimate` gives. Returns the 3x3 homogeneous matrix, float64 (NaN when
    the points are degenerate, as scikit-image).

    The arithmetic keeps the inputs' dtype like scikit-image under numpy 1.26 (Hallo's pin): with
    float32 keypoints the means, covariance and SVD are float32, and the scale is formed in
    float64. Written out explicitly so numpy 2's scalar promotion (NEP 50) does not change it.
    """
    src, dst = np.asarray(src), np.asarray(dst)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean
    covariance = dst_demean.T @ src_demean / n  # Eq. (38)
    d = np.ones(dim, dtype=np.float64)
    if np.linalg.det(covariance) < 0:  # Eq. (39)
        d[-1] = -1
    transform = np.eye(dim + 1, dtype=np.float64)
    u, singular, vt = np.linalg.svd(covariance)
    rank = int(np.count_nonzero(singular > singular.max() * max(covariance.shape) * np.finfo(float).eps))
    if rank == 0:
        return np.nan * transform
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        transform[:dim, :dim] = u @ vt
    elif rank == dim - 1:
        flip = d.copy()
        flip[-1] = -1
        transform[:dim, :dim] = u @ np.diag(flip) @ vt
    else:
        transform[:dim, :dim] = u @ np.diag(d) @ vt  # Eq. (40), (43)
    # Eq. (41), (42). numpy 1.26 formed 1.0 / <float32 scalar> in float64.
    scale = (1.0 / np.float64(src_demean.var(axis=0).sum())) * float(singular.astype(np.float64) @ d)
    transform[:dim, dim] = dst_mean - scale * (transform[:dim, :dim] @ src_mean.T)
    transform[:dim, :dim] *= scale
    return transform


def arcface_matrix(keypoints, size: int = 112) -> np.ndarray:
    """The 2x3 matrix insightface's `norm_crop` warps with: the 5 keypoints (float32 pixels) onto
    the ArcFace template scaled to `size` (a multiple of 112; 128-multiples shift x by 8/128)."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape != (5, 2):
        raise ValueError(f"arcface_matrix: expected 5 keypoints (5, 2), got shape {keypoints.shape}")
    if size % 112 == 0:
        template = ARCFACE_TEMPLATE * np.float32(size / 112.0)
    elif size % 128 == 0:
        ratio = np.float32(size / 128.0)
        template = ARCFACE_TEMPLATE * ratio
        template[:, 0] += np.float32(8.0 * ratio)
    else:
        raise ValueError(f"arcface_matrix: the crop size must be a multiple of 112 or 128, got {size}")
    return similarity_matrix(keypoints, template)[:2]


def box_crop_matrix(box, size: int) -> np.ndarray:
    """insightface's crop for its landmark and attribute models: the box centre to the crop centre,
    scaled so that 1.5 x the box's longer side fills `size` pixels, no rotation.

    `box` is (x1, y1, x2, y2) float32; the sums and sides are float32 and the rest float64, as
    insightface computed it under numpy 1.26.
    """
    x1, y1, x2, y2 = (np.float32(v) for v in np.asarray(box, dtype=np.float32)[:4])
    side = float(max(np.float32(x2 - x1), np.float32(y2 - y1)))
    scale = size / (side * 1.5)
    cx, cy = float(np.float32(x2 + x1)) / 2, float(np.float32(y2 + y1)) / 2
    half = size / 2
    return np.array([[scale, 0.0, half - cx * scale], [0.0, scale, half - cy * scale]], dtype=np.float64)


def invert_affine(matrix) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, with OpenCV's operation order (float64)."""
    m = np.asarray(matrix, dtype=np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a00, a11, a01, a10 = m[1, 1] * det, m[0, 0] * det, -m[0, 1] * det, -m[1, 0] * det
    return np.array([[a00, a01, -a00 * m[0, 2] - a01 * m[1, 2]],
                     [a10, a11, -a10 * m[0, 2] - a11 * m[1, 2]]], dtype=np.float64)


def transform_points(points, matrix) -> np.ndarray:
    """Apply a 2x3 matrix to (N, 2) points in float64; returns float32 like insightface."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    x = p[:, 0] * m[0, 0] + p[:, 1] * m[0, 1] + m[0, 2]
    y = p[:, 0] * m[1, 0] + p[:, 1] * m[1, 1] + m[1, 2]
    return np.stack([x, y], axis=1).astype(np.float32)


def warp_affine(image: np.ndarray, matrix, size: tuple[int, int]) -> np.ndarray:
    """OpenCV 4.x `warpAffine(image, matrix, size)` with INTER_LINEAR and a constant 0 border, bit
    for bit, in numpy.

    image: uint8 [H, W] or [H, W, C]; matrix: 2x3 mapping image pixels to output pixels;
    size: (width, height) of the output. Returns uint8 [height, width(, C)].

    OpenCV inverts the matrix, steps through output pixels in 1/1024-pixel fixed point, rounds to
    1/32 pixel, and blends the 2x2 source taps with integer weights 32*(32-fx or fx)*(32-fy or fy)
    (they sum to 2^15), reading 0 outside the image.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"warp_affine: expected a uint8 image [H, W(, C)], got {image.dtype} {image.shape}")
    width, height = int(size[0]), int(size[1])
    planar = image.ndim == 2
    source = image[:, :, None] if planar else image
    rows, cols = source.shape[:2]
    inv = invert_affine(matrix)
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    half = _AB_SCALE // _INTER_TAB // 2  # OpenCV's round_delta
    shift = 10 - _INTER_BITS

    def fixed(row: int) -> np.ndarray:
        # (rint(1024 * (A[r,1] y + t_r)) + 16 + rint(1024 * A[r,0] x)) >> 5, per output pixel.
        per_row = np.rint((inv[row, 1] * ys + inv[row, 2]) * _AB_SCALE).astype(np.int64) + half
        per_col = np.rint(inv[row, 0] * xs * _AB_SCALE).astype(np.int64)
        return (per_row[:, None] + per_col[None, :]) >> shift

    x_fixed, y_fixed = fixed(0), fixed(1)
    sx, fx = x_fixed >> _INTER_BITS, (x_fixed & (_INTER_TAB - 1)).astype(np.int32)
    sy, fy = y_fixed >> _INTER_BITS, (y_fixed & (_INTER_TAB - 1)).astype(np.int32)
    # Tap weights: 32 * wx * wy; a tap outside the image weighs 0 (it reads the border value 0).
    wx0 = (_INTER_TAB - fx) * ((sx >= 0) & (sx < cols))
    wx1 = fx * ((sx >= -1) & (sx < cols - 1))
    wy0 = (_INTER_TAB - fy) * ((sy >= 0) & (sy < rows))
    wy1 = fy * ((sy >= -1) & (sy < rows - 1))
    t00, t01, t10, t11 = _gather(source, sx, sy)
    top = wx0[:, :, None] * t00 + wx1[:, :, None] * t01
    bottom = wx0[:, :, None] * t10 + wx1[:, :, None] * t11
    total = (wy0[:, :, None] * top + wy1[:, :, None] * bottom) * _INTER_TAB
    out = ((total + (1 << (_COEF_BITS - 1))) >> _COEF_BITS).astype(np.uint8)
    return out[:, :, 0] if planar else out


def _gather(source: np.ndarray, sx: np.ndarray, sy: np.ndarray):
    """The 2x2 taps source[sy(+1), sx(+1)], positions clamped into the image: four [h, w, C] uint8.

    Only the source rectangle the positions cover is copied; its pixels are packed into one
    32-bit word each, so the gathers move words instead of 3-byte rows.
    """
    rows, cols, channels = source.shape
    x0, x1 = int(np.clip(sx.min(), 0, cols - 1)), int(np.clip(sx.max() + 1, 0, cols - 1))
    y0, y1 = int(np.clip(sy.min(), 0, rows - 1)), int(np.clip(sy.max() + 1, 0, rows - 1))
    width = x1 - x0 + 1
    region = source[y0:y1 + 1, x0:x1 + 1]
    if channels <= 4:
        packed = np.zeros((y1 - y0 + 1, width, 4), dtype=np.uint8)
        packed[:, :, :channels] = region
        words = packed.view(np.uint32).reshape(-1)
    cx = (np.clip(sx, x0, x1) - x0, np.clip(sx + 1, x0, x1) - x0)
    cy = (np.clip(sy, y0, y1) - y0, np.clip(sy + 1, y0, y1) - y0)
    taps = []
    for row in cy:
        for col in cx:
            if channels > 4:
                taps.append(region[row, col])
            else:
                taps.append(words[row * width + col][:, :, None].view(np.uint8)[:, :, :channels])
    return taps
