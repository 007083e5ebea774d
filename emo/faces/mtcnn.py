"""MTCNN face detection (Zhang et al. 2016, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks"), with the original weights as the `mtcnn` wheel
ships them.

Three small networks in a cascade:
1. P-Net (proposal) slides a 12x12 window over an image pyramid: a face probability and a box
   correction per window (stride 2). Boxes merge by non-maximum suppression (NMS) per level and
   across levels, are corrected and made square.
2. R-Net (refine) re-scores 24x24 crops of those squares and corrects them again.
3. O-Net (output) re-scores 48x48 crops, corrects the boxes a last time and places 5 landmarks.

Weights: `mtcnn==1.0.0` (MIT, PyPI) ships the original P/R/O-Net weights as joblib pickles of
Keras layer weights in `mtcnn/assets/weights/{pnet,rnet,onet}.lz4`. They are read with
`emo.faces.joblib_arrays` (a restricted unpickler) from the installed package folder; the
`mtcnn` package itself is never imported (it imports TensorFlow). facenet-pytorch 2.6.0 ships the
same numbers as PyTorch state dicts: every array matches exactly after the layout changes below.

Conventions of this implementation (the reference code differs in the places noted):
- Boxes are (x0, y0, x1, y1) in continuous pixel coordinates: pixel (i, j) covers
  [j, j+1) x [i, i+1), so a box's width is x1 - x0. The reference code (the MATLAB original and
  facenet-pytorch) uses 1-based inclusive pixel boxes and mixes `x2 - x1` and `x2 - x1 + 1` as
  the width; see `emo.faces.detect` for how our boxes compare with facenet-pytorch's.
- Landmarks are (x, y) in the same coordinates, in the order left eye, right eye, nose, left
  mouth corner, right mouth corner, "left" meaning the image's left.
- Crops reaching outside the image are padded with black, as in the MATLAB original
  (facenet-pytorch clips them to the image instead, which stretches the face).
- Pixels are RGB scaled to (x - 127.5) / 128, as in every public port of these weights.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .joblib_arrays import JoblibArrayError, read_joblib_arrays

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "mtcnn"
WEIGHTS_REQUIREMENT = "mtcnn==1.0.0"
WEIGHTS_SUBFOLDER = ("assets", "weights")
INSTALL_HINT = f"pip install {WEIGHTS_REQUIREMENT} (it brings joblib and lz4; TensorFlow is not needed)"

# Pixels are scaled to about -1..1 the way the networks were trained.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0
# Crops reaching outside the image are filled with black pixels (0 before scaling).
PAD_VALUE = (0.0 - PIXEL_MEAN) * PIXEL_SCALE

PNET_WINDOW = 12  # P-Net sees 12x12 windows ...
PNET_STRIDE = 2  # ... every 2 pixels (one 2x2 max-pool)
RNET_SIZE = 24
ONET_SIZE = 48
NET_BATCH = 256  # R/O-Net crops per forward pass: bounds memory when a photo gives many candidates


class MTCNNWeightsError(ValueError):
    """The MTCNN weights in the `mtcnn` package are damaged or not the expected ones."""


@dataclass(frozen=True)
class CascadeSettings:
    """The cascade's constants: the paper's and the MATLAB original's defaults, except the
    minimum face size (20 px there), which only sets where the image pyramid starts.

    min_face_size: smallest face looked for, in pixels of the image the cascade runs on; the
        pyramid's first level scales the image by 12 / min_face_size (P-Net's window is 12 px).
    scale_factor: ratio between pyramid levels; 0.709 ~ 1/sqrt(2) halves the area each level.
    thresholds: face probability each stage needs (P-Net, R-Net, O-Net).
    nms_*: overlap above which the less likely of two boxes is dropped: intersection over union
        for P- and R-Net, intersection over the smaller box for O-Net (it also removes a box
        nested inside a larger face).
    """

    min_face_size: float = 40.0
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    nms_pnet_level: float = 0.5
    nms_pnet_all: float = 0.7
    nms_rnet: float = 0.7
    nms_onet_min: float = 0.7


# ------------------------------------------------------------------------------- networks


class ProposalNet(nn.Module):
    """P-Net: fully convolutional; [N, 3, H, W] -> face probability [N, H', W'] and box
    corrections [N, 4, H', W'] for the 12x12 window at (2j, 2i) of each output cell (i, j),
    with H' = ceil((H - 2) / 2) - 4."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.box = nn.Conv2d(32, 4, 1)
        self.score = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # Keras "same" pooling = caffe's ceil rounding
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return torch.softmax(self.score(x), dim=1)[:, 1], self.box(x)


def _flatten_like_caffe(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, W*H*C] in (W, H, C) order.

    The original caffe models were trained on transposed images (MATLAB is column-major); the
    public ports feed upright images and transpose the feature map back before the dense layer
    (Keras: Permute((2, 1, 3)) on NHWC). Flattening in any other order scrambles the dense
    weights."""
    return x.permute(0, 3, 2, 1).flatten(1)


class RefineNet(nn.Module):
    """R-Net: [N, 3, 24, 24] -> face probability [N] and box corrections [N, 4]."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.box = nn.Linear(128, 4)
        self.score = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)  # 22 -> 11
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)  # 9 -> 4
        x = self.prelu3(self.conv3(x))  # [N, 64, 3, 3]
        x = self.prelu4(self.dense4(_flatten_like_caffe(x)))
        return torch.softmax(self.score(x), dim=1)[:, 1], self.box(x)


class OutputNet(nn.Module):
    """O-Net: [N, 3, 48, 48] -> face probability [N], box corrections [N, 4] and landmarks [N, 10]
    (x of the 5 points, then y, as fractions of the crop)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)
        self.score = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)  # 46 -> 23
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)  # 21 -> 10
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)  # 8 -> 4
        x = self.prelu4(self.conv4(x))  # [N, 128, 3, 3]
        x = self.prelu5(self.dense5(_flatten_like_caffe(x)))
        return torch.softmax(self.score(x), dim=1)[:, 1], self.box(x), self.landmarks(x)


# The arrays of each weight file, in file order (Keras `get_weights()`: layers in the order the
# model defines them, kernel then bias). "conv": kernel HWIO + bias; "prelu": alpha, shared over
# the spatial axes ((1, 1, C)) after a conv, per unit ((C,)) after a dense layer; "dense":
# kernel [in, out] + bias.
WEIGHT_LAYOUT = {
    "pnet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("box", "conv"), ("score", "conv")],
    "rnet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("dense4", "dense"), ("prelu4", "prelu"),
             ("box", "dense"), ("score", "dense")],
    "onet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("conv4", "conv"), ("prelu4", "prelu"),
             ("dense5", "dense"), ("prelu5", "prelu"), ("box", "dense"), ("landmarks", "dense"),
             ("score", "dense")],
}


def keras_to_torch(arrays: list[np.ndarray], layout: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """A state dict from Keras layer weights listed in `layout` order; every array is used.

    conv kernels go HWIO -> OIHW, dense kernels [in, out] -> [out, in], PReLU alphas are
    flattened to one value per channel. Raises MTCNNWeightsError when the count is wrong.
    """
    expected = sum(1 if kind == "prelu" else 2 for _, kind in layout)
    if len(arrays) != expected:
        raise MTCNNWeightsError(f"expected {expected} arrays, found {len(arrays)}")
    state, position = {}, 0
    for name, kind in layout:
        if kind == "prelu":
            state[f"{name}.weight"] = torch.from_numpy(arrays[position].reshape(-1))
            position += 1
            continue
        kernel, bias = arrays[position], arrays[position + 1]
        position += 2
        if kind == "conv":
            if kernel.ndim != 4:
                raise MTCNNWeightsError(f"{name}: expected a 4-d conv kernel, found shape {kernel.shape}")
            kernel = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        else:
            if kernel.ndim != 2:
                raise MTCNNWeightsError(f"{name}: expected a 2-d dense kernel, found shape {kernel.shape}")
            kernel = kernel.T  # [in, out] -> [out, in]
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f"{name}.bias"] = torch.from_numpy(bias)
    return state


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` into `module`; names and shapes must match exactly (no silent skipping)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise MTCNNWeightsError(f"{what}: missing {missing}, unexpected {unexpected}, wrong shapes {wrong}")
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def weights_folder() -> Path:
    """Where the installed `mtcnn` package keeps its weight files.

    Found with importlib's finder, which locates the package without running its __init__ (that
    imports TensorFlow). Raises FileNotFoundError, naming the pip command, when it is missing.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"face detection: the MTCNN weights come from the '{WEIGHTS_PACKAGE}' package, which is not "
            f"installed; {INSTALL_HINT}"
        )
    return Path(locations[0]).joinpath(*WEIGHTS_SUBFOLDER)


class MTCNN(nn.Module):
    """The three networks. Build one with `MTCNN.from_package()` (or `load_mtcnn()`, cached)."""

    def __init__(self):
        super().__init__()
        self.pnet, self.rnet, self.onet = ProposalNet(), RefineNet(), OutputNet()

    @classmethod
    def from_package(cls, folder: str | Path | None = None) -> "MTCNN":
        """The networks with the weights of the installed `mtcnn` package (or of `folder`, a
        folder holding pnet.lz4, rnet.lz4 and onet.lz4). Raises FileNotFoundError for missing
        files and MTCNNWeightsError (a ValueError) for damaged ones, both naming the pip command."""
        folder = Path(folder) if folder is not None else weights_folder()
        model = cls()
        for net in ("pnet", "rnet", "onet"):
            path = folder / f"{net}.lz4"
            if not path.is_file():
                raise FileNotFoundError(
                    f"face detection: the MTCNN weight file {path} is missing; reinstall the package: "
                    f"pip install --force-reinstall {WEIGHTS_REQUIREMENT}"
                )
            try:
                arrays = read_joblib_arrays(path)
                state = keras_to_torch(arrays, WEIGHT_LAYOUT[net])
                load_state_strict(getattr(model, net), state, net)
            except (JoblibArrayError, MTCNNWeightsError) as error:
                raise MTCNNWeightsError(
                    f"face detection: the MTCNN weight file {path} cannot be used ({error}); reinstall the "
                    f"package: pip install --force-reinstall {WEIGHTS_REQUIREMENT}"
                ) from None
        logger.debug("MTCNN weights loaded from %s", folder)
        return model.eval().requires_grad_(False)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, settings: CascadeSettings = CascadeSettings()):
        """Faces in an RGB uint8 image [H, W, 3].

        Returns (boxes [K, 4] float64 (x0, y0, x1, y1), scores [K] float64 (O-Net's face
        probability), landmarks [K, 5, 2] float64), in NMS order (most likely first).
        """
        return run_cascade(self, rgb, settings)


@functools.lru_cache(maxsize=1)
def load_mtcnn() -> MTCNN:
    """The packaged MTCNN, loaded once per process (about 2 MB of weights, ~50 ms)."""
    return MTCNN.from_package()


# ------------------------------------------------------------------------------- box arithmetic


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, over_min: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, most likely first.

    boxes [N, 4] (x0, y0, x1, y1); a box is dropped when its overlap with a kept, more likely box
    exceeds `threshold`: intersection over union, or over the smaller area when `over_min`.
    """
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter = (np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
                 * np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None))
        base = np.minimum(area[best], area[rest]) if over_min else area[best] + area[rest] - inter
        overlap = inter / np.maximum(base, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def calibrate(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply a network's box corrections [N, 4] (fractions of the box's width and height)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def square_pixel_boxes(boxes: np.ndarray) -> np.ndarray:
    """Whole-pixel squares [N, 4] (int64) on the boxes' centres with side max(w, h).

    The next network sees a square crop, so the face keeps its aspect ratio."""
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side_px = np.maximum(1, np.round(side)).astype(np.int64)
    x0 = np.round((boxes[:, 0] + boxes[:, 2] - side_px) / 2).astype(np.int64)
    y0 = np.round((boxes[:, 1] + boxes[:, 3] - side_px) / 2).astype(np.int64)
    return np.stack([x0, y0, x0 + side_px, y0 + side_px], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Crops of the scaled image [H, W, 3] float32 inside whole-pixel boxes [N, 4], resized to
    [N, 3, size, size]; the parts of a box outside the image are black (PAD_VALUE)."""
    height, width = image.shape[:2]
    patches = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        crop = np.full((y1 - y0, x1 - x0, 3), PAD_VALUE, dtype=np.float32)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if cx1 > cx0 and cy1 > cy0:
            crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = image[cy0:cy1, cx0:cx1]
        # Area averaging when shrinking (no aliasing), bilinear when enlarging a small box.
        interpolation = cv2.INTER_AREA if crop.shape[0] >= size else cv2.INTER_LINEAR
        patches[k] = cv2.resize(crop, (size, size), interpolation=interpolation)
    return torch.from_numpy(patches).permute(0, 3, 1, 2)


def _run_batched(net: nn.Module, patches: torch.Tensor) -> list[np.ndarray]:
    outputs = [net(patches[i:i + NET_BATCH]) for i in range(0, len(patches), NET_BATCH)]
    return [torch.cat(parts).double().numpy() for parts in zip(*outputs)]


def pyramid_scales(height: int, width: int, settings: CascadeSettings) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from min_face_size up to the whole
    short side, a factor scale_factor apart."""
    scale = PNET_WINDOW / settings.min_face_size
    scales = []
    while min(height, width) * scale >= PNET_WINDOW:
        scales.append(scale)
        scale *= settings.scale_factor
    return scales


# ------------------------------------------------------------------------------- the cascade


def _empty():
    return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))


def _proposals(model: MTCNN, image: np.ndarray, settings: CascadeSettings) -> np.ndarray:
    """Stage 1: P-Net over the pyramid -> whole-pixel squares [N, 4] of likely faces."""
    height, width = image.shape[:2]
    level_boxes, level_scores, level_offsets = [], [], []
    for scale in pyramid_scales(height, width, settings):
        scaled_h, scaled_w = math.ceil(height * scale), math.ceil(width * scale)
        scaled = cv2.resize(image, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
        prob, offsets = model.pnet(torch.from_numpy(scaled).permute(2, 0, 1)[None])
        prob, offsets = prob[0].double().numpy(), offsets[0].double().numpy()
        rows, cols = np.nonzero(prob >= settings.thresholds[0])
        if rows.size == 0:
            continue
        # Each output cell is a 12x12 window of the scaled image; map it back with the scale
        # each axis really got (the scaled size was rounded up).
        sx, sy = scaled_w / width, scaled_h / height
        boxes = np.stack([cols * PNET_STRIDE / sx, rows * PNET_STRIDE / sy,
                          (cols * PNET_STRIDE + PNET_WINDOW) / sx, (rows * PNET_STRIDE + PNET_WINDOW) / sy], axis=1)
        scores = prob[rows, cols]
        keep = nms(boxes, scores, settings.nms_pnet_level)
        level_boxes.append(boxes[keep])
        level_scores.append(scores[keep])
        level_offsets.append(offsets[:, rows[keep], cols[keep]].T)
    if not level_boxes:
        return np.zeros((0, 4), dtype=np.int64)
    boxes, scores, offsets = (np.concatenate(parts) for parts in (level_boxes, level_scores, level_offsets))
    keep = nms(boxes, scores, settings.nms_pnet_all)
    return square_pixel_boxes(calibrate(boxes[keep], offsets[keep]))


@torch.inference_mode()
def run_cascade(model: MTCNN, rgb: np.ndarray, settings: CascadeSettings = CascadeSettings()):
    """P-Net -> R-Net -> O-Net on an RGB uint8 image [H, W, 3]; see `MTCNN.detect`."""
    image = (rgb.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE
    squares = _proposals(model, image, settings)
    logger.debug("MTCNN: %d proposal(s)", len(squares))
    if len(squares) == 0:
        return _empty()

    # Stage 2: R-Net re-scores and corrects the proposals.
    scores, offsets = _run_batched(model.rnet, crop_patches(image, squares, RNET_SIZE))
    passed = scores > settings.thresholds[1]
    boxes, scores, offsets = squares[passed].astype(np.float64), scores[passed], offsets[passed]
    keep = nms(boxes, scores, settings.nms_rnet)
    squares = square_pixel_boxes(calibrate(boxes[keep], offsets[keep]))
    logger.debug("MTCNN: %d after R-Net", len(squares))
    if len(squares) == 0:
        return _empty()

    # Stage 3: O-Net re-scores, corrects and places the landmarks (fractions of its crop).
    scores, offsets, points = _run_batched(model.onet, crop_patches(image, squares, ONET_SIZE))
    passed = scores > settings.thresholds[2]
    crops = squares[passed].astype(np.float64)
    scores, offsets, points = scores[passed], offsets[passed], points[passed]
    if len(crops) == 0:
        return _empty()
    side = (crops[:, 2:4] - crops[:, 0:2])[:, None, :]  # [K, 1, 2] (w, h)
    landmarks = crops[:, None, 0:2] + side * np.stack([points[:, 0:5], points[:, 5:10]], axis=2)
    boxes = calibrate(crops, offsets)
    keep = nms(boxes, scores, settings.nms_onet_min, over_min=True)
    return boxes[keep], scores[keep], landmarks[keep]
