"""Hallo's face analysis without insightface: detection (SCRFD through insightface 0.7.3's
`RetinaFace` decode), the largest-face choice, the raw ArcFace embedding and the 106-point
landmarks, computed as insightface 0.7.3 + Hallo compute them from a user's antelopev2 folder.

Images: the analysis functions take **BGR uint8 [H, W, 3] numpy arrays**, as insightface does and
as Hallo feeds it (`cv2.cvtColor(np.array(PIL RGB), RGB2BGR)`). Our library holds images as RGB
float 0..1 tensors [H, W, 3]; `bgr_from_image` converts one the way a PNG/JPEG read by Hallo would
arrive (8-bit levels rounded, channels reversed), and `hallo_embedding` takes such a tensor.

Boxes are float32 (x1, y1, x2, y2) in pixels of the analysed image, not clipped (a face that runs
off the edge has negative coordinates); keypoints are float32 (5, 2): left eye, right eye, nose,
left and right mouth corner (image left/right).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .align import arcface_matrix, box_crop_matrix, invert_affine, transform_points, warp_affine
from .onnx_models import load_models, models_folder, require, resolve_backend

logger = logging.getLogger(__name__)

# Hallo's settings: FaceAnalysis.prepare(ctx_id=0, det_size=(640, 640)), insightface's defaults.
DET_SIZE = (640, 640)  # (width, height)
DET_THRESH = 0.5
NMS_THRESH = 0.4
EMBEDDING_SIZE = 512


@dataclass(frozen=True)
class Face:
    """One detection: `bbox` float32 (4,) x1, y1, x2, y2; `score` float32; `kps` float32 (5, 2)."""

    bbox: np.ndarray
    score: np.float32
    kps: np.ndarray

    @property
    def area(self) -> np.float32:
        """(x2 - x1) * (y2 - y1) in float32, the key Hallo sorts faces by."""
        x1, y1, x2, y2 = self.bbox[:4]
        return (x2 - x1) * (y2 - y1)


@dataclass(frozen=True)
class Detection:
    """Every step of one detection run (for inspection and tests).

    resized: the letterboxed image before padding, uint8 [nh, nw, 3]; det_scale: nh / H;
    candidates: float32 [K, 5] (x1, y1, x2, y2, score) in image pixels, sorted by score;
    candidate_kps: float32 [K, 5, 2]; keep: int64 [F] rows of `candidates` that survive NMS;
    faces: the F faces in that order.
    """

    resized: np.ndarray
    det_scale: float
    raw_outputs: tuple
    candidates: np.ndarray
    candidate_kps: np.ndarray
    keep: np.ndarray
    faces: tuple


def letterbox(image: np.ndarray, size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, np.ndarray, float]:
    """insightface's detector input: resize to fit `size` (width, height) keeping the aspect ratio
    (sides truncated to int), pad bottom/right with black. Returns (canvas [h, w, 3], resized,
    det_scale); det_scale is new_height / H even when the width limits the resize."""
    rows, cols = image.shape[:2]
    image_ratio = float(rows) / cols
    model_ratio = float(size[1]) / size[0]
    if image_ratio > model_ratio:
        new_height = size[1]
        new_width = int(new_height / image_ratio)
    else:
        new_width = size[0]
        new_height = int(new_width * image_ratio)
    det_scale = float(new_height) / rows
    resized = cv2.resize(image, (new_width, new_height))
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = resized
    return canvas, resized, det_scale


def blob(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """cv2.dnn.blobFromImage(image, 1/std, mean=mean, swapRB=True): BGR uint8 [H, W, 3] -> RGB
    float32 [1, 3, H, W], (x - mean) / std (the quotient correctly rounded, as OpenCV 4.9/4.10)."""
    rgb = image[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)[None])


def decode_level(scores, boxes, kps, stride: int, input_size: tuple[int, int], num_anchors: int,
                 threshold: float = DET_THRESH):
    """One stride level of SCRFD's output, decoded as insightface 0.7.3's RetinaFace does.

    scores [N, 1], boxes [N, 4], kps [N, 10] (or None): float32 rows per anchor, cell-major with
    the anchors of a cell adjacent; input_size (width, height) of the network input. Anchor
    centres are (column * stride, row * stride) (no half-cell offset). Rows with score >=
    threshold give boxes (cx - s b0, cy - s b1, cx + s b2, cy + s b3) and keypoints
    (cx + s p2k, cy + s p2k+1), float32 in network-input pixels.
    Returns (row indices, scores [K, 1], boxes [K, 4], kps [K, 5, 2] or None).
    """
    width, height = input_size[0] // stride, input_size[1] // stride
    grid = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
    centres = (grid * stride).reshape(-1, 2)
    if num_anchors > 1:
        centres = np.repeat(centres, num_anchors, axis=0)
    scores = np.asarray(scores)
    rows = np.where(scores >= threshold)[0]
    distances = np.asarray(boxes)[rows] * stride
    anchor = centres[rows]
    decoded = np.stack([anchor[:, 0] - distances[:, 0], anchor[:, 1] - distances[:, 1],
                        anchor[:, 0] + distances[:, 2], anchor[:, 1] + distances[:, 3]], axis=-1)
    points = None
    if kps is not None:
        offsets = np.asarray(kps)[rows] * stride
        points = (offsets.reshape(len(rows), offsets.shape[1] // 2, 2) + anchor[:, None, :]).astype(np.float32)
    return rows, scores[rows], decoded, points


def nms(candidates: np.ndarray, threshold: float = NMS_THRESH) -> np.ndarray:
    """Greedy NMS with the legacy +1 pixel convention: candidates float32 [K, 5] (x1, y1, x2, y2,
    score); a box is dropped when its IoU with a kept one is > threshold. Returns kept rows (int64)
    in descending score order."""
    x1, y1, x2, y2, scores = (candidates[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[np.where(overlap <= threshold)[0]]
    return np.asarray(keep, dtype=np.int64)


def largest_index(faces) -> Optional[int]:
    """Hallo's choice: the face with the largest float32 box area (the first on a tie), or None."""
    if not faces:
        return None
    return max(range(len(faces)), key=lambda i: faces[i].area)


def bgr_from_image(image) -> np.ndarray:
    """Our RGB float 0..1 image tensor [H, W, 3] (or a batch: the first) -> BGR uint8 [H, W, 3], the
    array Hallo hands insightface for the same picture (levels rounded like `emo.image.to_pil`)."""
    import torch

    from ..image import as_image

    image = as_image(image, "face analysis")
    rgb = (image.detach().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _check_bgr(image, operation: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"{operation}: expected a BGR uint8 image [H, W, 3], got {image.dtype} {image.shape}; "
            "convert an RGB image tensor with emo.faces.face_analysis.bgr_from_image"
        )
    return image


class FaceAnalysis:
    """insightface 0.7.3's FaceAnalysis as Hallo uses it, on a model folder (Hallo's
    `pretrained_models/face_analysis`, or its `models/` subfolder).

    backend: "auto" (onnxruntime if installed, else OpenCV DNN), "onnxruntime" or "opencv";
    providers: onnxruntime execution providers (default CPU only). Networks are loaded on first use
    and released by `close()`. All image arguments are BGR uint8 [H, W, 3].
    """

    def __init__(self, folder: str | os.PathLike, backend: str = "auto", providers=None):
        self.folder = Path(folder)
        self.backend = resolve_backend(backend)
        self.models = load_models(folder, self.backend, providers)
        self.detector = require(self.models, "detection", folder)
        self.recognition = require(self.models, "recognition", folder)
        if len(self.detector.output_names) not in (9, 15):
            raise ValueError(
                f"face analysis: the detector {self.detector.path.name} has {len(self.detector.output_names)} "
                "outputs; Hallo needs a detector with keypoints (9 or 15 outputs, like scrfd_10g_bnkps.onnx)"
            )
        # A static detector input wins over det_size, as in insightface.
        self.det_size = self.detector.input_size or DET_SIZE

    def close(self) -> None:
        """Release the runtime sessions (they are reloaded on the next use)."""
        for model in self.models.values():
            model.close()

    def detect_details(self, image: np.ndarray) -> Detection:
        """Detection with every intermediate step; see `Detection`."""
        image = _check_bgr(image, "face detection")
        canvas, resized, det_scale = letterbox(image, self.det_size)
        model = self.detector
        outputs = model.run(blob(canvas, model.input_mean, model.input_std))
        levels = len(outputs) // 3
        strides = (8, 16, 32, 64, 128)[:levels]
        num_anchors = 2 if levels == 3 else 1
        scores, boxes, points = [], [], []
        for level, stride in enumerate(strides):
            _, s, b, p = decode_level(outputs[level], outputs[level + levels], outputs[level + 2 * levels],
                                      stride, self.det_size, num_anchors)
            scores.append(s)
            boxes.append(b)
            points.append(p)
        scores = np.vstack(scores)
        order = scores.ravel().argsort()[::-1]
        # numpy casts the Python-float scale to float32 before dividing float32 arrays.
        scale = np.float32(det_scale)
        boxes = np.vstack(boxes) / scale
        points = np.vstack(points) / scale
        candidates = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order]
        candidate_kps = points[order]
        keep = nms(candidates)
        faces = tuple(Face(bbox=candidates[i, :4].copy(), score=candidates[i, 4], kps=candidate_kps[i].copy())
                      for i in keep)
        return Detection(resized, det_scale, tuple(outputs), candidates, candidate_kps, keep, faces)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, in NMS order (descending score); [] when there is none."""
        return list(self.detect_details(image).faces)

    @staticmethod
    def largest(faces) -> Optional[Face]:
        """Hallo's choice among `faces`: the largest box area (not the best score); None if empty."""
        index = largest_index(faces)
        return None if index is None else faces[index]

    def aligned_crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The recogniser's input crop: the keypoints warped onto the ArcFace template, BGR uint8."""
        size = self.recognition.input_size[0]
        return warp_affine(_check_bgr(image, "face embedding"), arcface_matrix(face.kps, size), (size, size))

    def embedding_of_crop(self, crop: np.ndarray) -> np.ndarray:
        """The raw (not normalised) recogniser output for an aligned BGR crop: float32 (512,)."""
        model = self.recognition
        return model.run(blob(crop, model.input_mean, model.input_std))[0].reshape(-1).astype(np.float32, copy=False)

    def embedding(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The raw ArcFace embedding of `face`: float32 (512,), as insightface's `face.embedding`."""
        return self.embedding_of_crop(self.aligned_crop(image, face))

    def landmarks_106(self, image: np.ndarray, face: Face) -> np.ndarray:
        """insightface's 2d106det landmarks of `face`: float32 (106, 2) image pixels (topology in
        emo.families.hallo.masks). Needs 2d106det.onnx in the folder."""
        model = require(self.models, "landmark_2d_106", self.folder)
        image = _check_bgr(image, "face landmarks")
        size = model.input_size[0]
        matrix = box_crop_matrix(face.bbox, size)
        crop = warp_affine(image, matrix, (size, size))
        pred = model.run(blob(crop, model.input_mean, model.input_std))[0][0].reshape(-1, 2).copy()
        pred += 1
        pred *= size // 2
        return transform_points(pred, invert_affine(matrix))

    def hallo_face_embedding(self, image: np.ndarray) -> np.ndarray:
        """What Hallo's ImageProcessor.preprocess returns as `face_emb` for a BGR uint8 image: the raw
        embedding of the largest face, float32 (512,), or float64 zeros (512,) with no face."""
        face = self.largest(self.detect(image))
        if face is None:
            logger.warning("face analysis: no face found; Hallo then uses a zero identity embedding")
            return np.zeros(EMBEDDING_SIZE, dtype=np.float64)
        return self.embedding(image, face)


_CACHE: dict[tuple, FaceAnalysis] = {}
_CACHE_LOCK = threading.Lock()


def load_face_analysis(folder: str | os.PathLike, backend: str = "auto", providers=None) -> FaceAnalysis:
    """A FaceAnalysis for `folder`, made once per (folder, backend, providers) per process."""
    key = (str(models_folder(folder).resolve()), resolve_backend(backend), tuple(providers or ()))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = FaceAnalysis(folder, backend, providers)
        return _CACHE[key]


def free_face_analysis(folder: Optional[str | os.PathLike] = None) -> None:
    """Drop the cached analyses (all, or those of one folder) and their runtime sessions."""
    target = None if folder is None else str(models_folder(folder).resolve())
    with _CACHE_LOCK:
        for key in [key for key in _CACHE if target is None or key[0] == target]:
            _CACHE.pop(key).close()


def hallo_embedding(image, folder: str | os.PathLike, backend: str = "auto") -> np.ndarray:
    """Hallo's identity embedding of our RGB float image tensor [H, W, 3]: float32 (512,) for the
    largest face, float64 zeros (512,) when there is none (Hallo's fallback)."""
    return load_face_analysis(folder, backend).hallo_face_embedding(bgr_from_image(image))
