"""Hallo's face / lip / background masks from face landmarks, bit for bit as its `get_mask` and
`ImageProcessor.preprocess` compute them (hallo/utils/util.py, hallo/datasets/image_processor.py at
fudan-generative-vision/hallo 8fd7c57).

Hallo takes 478 MediaPipe FaceLandmarker points (pixels), makes axis-aligned rectangles around the
face oval (grown by `face_expand_ratio`, 1.2 in its default config) and the outer lip (always
grown 2.0x), blurs them at 64x64, and resizes the results with PIL to the attention resolutions.
Masks here are uint8 numpy arrays (0/255 at full resolution, 0..255 at 64x64); the tensors that
go to the model are float32 torch tensors in 0..1.

Landmarks come from MediaPipe's FaceLandmarker with the user's
`face_landmarker_v2_with_blendshapes.task` when the optional `mediapipe` package is installed and
the file is in the face-analysis models folder (Hallo's exact route), and otherwise from
insightface's 2d106det model in the same folder. The 106 points cover the jaw but not the
forehead, so the face rectangle's top is extrapolated (see FOREHEAD_RATIO); that route
approximates Hallo's rectangles, it does not reproduce them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ...faces.boxes import FaceNotFoundError

logger = logging.getLogger(__name__)

# MediaPipe face-mesh topology (vertex indices of the 468/478-point mesh; mediapipe
# python/solutions/face_mesh_connections.py): the vertices of FACEMESH_FACE_OVAL (Hallo's
# `silhouette_ids`) and of the outer ring of FACEMESH_LIPS (Hallo's `lip_ids`). Order is irrelevant.
FACE_OVAL_VERTICES = (
    10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176,
    234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454,
)
OUTER_LIP_VERTICES = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375, 405, 409)

# insightface 2d106det topology. Its markup (deepinsight/insightface alignment/coordinate_reg,
# "2d106markup.jpg") is not in index order; the correspondence to the sequential 106-point layout
# (contour 0-32, brows 33-50, nose 51-65, eyes 66-83, outer lip 84-95, inner lip 96-103, pupils) is
# the `_lmrk_fix` table of iperov/DeepixLab DeepixLab/modelhub/onnx/InsightFace2D106 (46720ef),
# which reorders this model's output. From it: the face contour (ear to chin to ear) is 0..32,
# the brows 43..51 and 97..105, the outer lip the 12 points below, the inner lip
# 54, 57, 60, 62, 65, 66, 69, 70.
CONTOUR_106 = tuple(range(33))
OUTER_LIP_106 = (52, 53, 55, 56, 58, 59, 61, 63, 64, 67, 68, 71)
EYEBROWS_106 = tuple(range(43, 52)) + tuple(range(97, 106))
CHIN_106 = 0
# MediaPipe's face oval reaches the top of the forehead (vertex 10); the 106 contour stops at the
# ears. In MediaPipe's canonical face model (modules/face_geometry/data/canonical_face_model.obj,
# frontal) vertex 10 lies 0.265 x (chin -> brow centre) beyond the mean of the brow vertices; we put
# a forehead point there, along the face's own chin-to-brow axis.
FOREHEAD_RATIO = 0.265

FACE_EXPAND_RATIO = 1.2  # Hallo configs/inference/default.yaml face_expand_ratio
LIP_EXPAND_RATIO = 2.0  # get_mask never passes a ratio to get_lip_mask
BLUR_SIZE = 64
FACE_BLUR_KERNEL = 51
LIP_BLUR_KERNEL = 31
LANDMARKER_TASK = "face_landmarker_v2_with_blendshapes.task"
LANDMARK_SOURCES = ("auto", "mediapipe", "insightface")

# sep_background = int((1 - v / 255) * 255) in float64, truncated: 255 - v except for 50 values
# where floating point makes it one less.
BACKGROUND_LUT = ((1.0 - np.arange(256, dtype=np.float64) / 255.0) * 255).astype(np.uint8)


def region_rectangle(points, width: int, height: int, ratio: float) -> tuple[int, int, int, int]:
    """Hallo's rectangle (x0, y0, x1, y1) around `points` (N, 2) pixels, grown by `ratio`.

    The extremes are rounded half to even, the centre and half sides are float floor divisions,
    and a rectangle past an edge is shifted back inside. When it is larger than the image the
    start ends negative; Hallo slices with it as is (see `rectangle_mask`).
    """
    points = np.asarray(points, dtype=np.float64)
    min_x, min_y = np.round(points.min(axis=0))
    max_x, max_y = np.round(points.max(axis=0))
    mid_x, mid_y = (max_x + min_x) // 2, (max_y + min_y) // 2
    side_x, side_y = (max_x - min_x) * ratio, (max_y - min_y) * ratio
    min_x, max_x = mid_x - side_x // 2, mid_x + side_x // 2
    min_y, max_y = mid_y - side_y // 2, mid_y + side_y // 2
    if min_x < 0:
        max_x -= min_x
        min_x = 0
    if max_x > width:
        min_x -= max_x - width
        max_x = width
    if min_y < 0:
        max_y -= min_y
        min_y = 0
    if max_y > height:
        min_y -= max_y - height
        max_y = height
    return round(min_x), round(min_y), round(max_x), round(max_y)


def rectangle_mask(rect, height: int, width: int) -> np.ndarray:
    """uint8 [height, width], 255 on `mask[y0:y1, x0:x1]` with numpy slicing, so a negative start
    counts from the far edge exactly as in Hallo (a face wider than the image leaves only a strip)."""
    x0, y0, x1, y1 = rect
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


def blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    """Hallo's blur_mask: bilinear resize to 64x64 (even when shrinking), Gaussian (kernel, sigma
    from the kernel), min-max stretch to 0..255. uint8 in, uint8 [64, 64] out."""
    small = cv2.resize(mask, (BLUR_SIZE, BLUR_SIZE))
    blurred = cv2.GaussianBlur(small, (kernel, kernel), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


@dataclass(frozen=True)
class HalloMasks:
    """Hallo's masks for one reference image. Rectangles are (x0, y0, x1, y1) as Hallo slices them;
    face_mask / lip_mask are uint8 [H, W]; the four others uint8 [64, 64]."""

    face_rect: tuple[int, int, int, int]
    lip_rect: tuple[int, int, int, int]
    face_mask: np.ndarray
    lip_mask: np.ndarray
    face_mask_blur: np.ndarray
    sep_lip: np.ndarray
    sep_background: np.ndarray
    sep_face: np.ndarray


def masks_from_regions(face_points, lip_points, height: int, width: int,
                       face_expand_ratio: float = FACE_EXPAND_RATIO) -> HalloMasks:
    """All of Hallo's masks from the face-outline and outer-lip points (pixels) of one face."""
    face_rect = region_rectangle(face_points, width, height, face_expand_ratio)
    lip_rect = region_rectangle(lip_points, width, height, LIP_EXPAND_RATIO)
    face_mask, lip_mask = rectangle_mask(face_rect, height, width), rectangle_mask(lip_rect, height, width)
    face_blur, lip_blur = blur(face_mask, FACE_BLUR_KERNEL), blur(lip_mask, LIP_BLUR_KERNEL)
    return HalloMasks(face_rect, lip_rect, face_mask, lip_mask, face_blur, lip_blur,
                      BACKGROUND_LUT[face_blur], cv2.subtract(face_blur, lip_blur))


def masks_from_mediapipe(landmarks, height: int, width: int,
                         face_expand_ratio: float = FACE_EXPAND_RATIO) -> HalloMasks:
    """Hallo's masks from MediaPipe's 478 (or 468) landmarks in pixels, float64 (N, 2)."""
    landmarks = _check_landmarks(landmarks, 468, "Hallo masks (MediaPipe landmarks)")
    return masks_from_regions(landmarks[list(FACE_OVAL_VERTICES)], landmarks[list(OUTER_LIP_VERTICES)],
                              height, width, face_expand_ratio)


def face_outline_106(landmarks) -> np.ndarray:
    """The points standing in for MediaPipe's face oval: the 33 contour points and a forehead point
    FOREHEAD_RATIO x (chin -> brow centre) beyond the brow centre. float64 (34, 2)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    brows, chin = landmarks[list(EYEBROWS_106)].mean(axis=0), landmarks[CHIN_106]
    forehead = brows + FOREHEAD_RATIO * (brows - chin)
    return np.vstack([landmarks[list(CONTOUR_106)], forehead[None]])


def masks_from_106(landmarks, height: int, width: int, face_expand_ratio: float = FACE_EXPAND_RATIO) -> HalloMasks:
    """Hallo-style masks from insightface's 106 landmarks (pixels): an approximation of the
    MediaPipe route (the face rectangle's top is extrapolated; the lip comes from the outer lip)."""
    landmarks = _check_landmarks(landmarks, 106, "Hallo masks (106 landmarks)")
    return masks_from_regions(face_outline_106(landmarks), landmarks[list(OUTER_LIP_106)],
                              height, width, face_expand_ratio)


def _check_landmarks(landmarks, count: int, operation: str) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 2 or landmarks.shape[1] < 2 or landmarks.shape[0] < count:
        raise ValueError(f"{operation}: expected at least {count} landmarks (N, 2) in pixels, got shape "
                         f"{landmarks.shape}")
    if not np.isfinite(landmarks[:, :2]).all():
        raise ValueError(f"{operation}: the landmarks contain NaN or infinite values")
    return landmarks[:, :2]


def _pil_resize(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """torchvision Resize on a PIL image: PIL bilinear (antialiased when shrinking)."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.array(image)


def face_region(masks: HalloMasks, img_size: tuple[int, int] = (512, 512)) -> torch.Tensor:
    """Hallo's `face_mask` tensor: the full-resolution face rectangle resized with PIL bilinear to
    torchvision `Resize(img_size)` (so height = img_size[0], width = img_size[1]; Hallo passes
    (width, height) there, which only matters for non-square sizes), / 255, as 3 equal channels.
    float32 [3, img_size[0], img_size[1]]."""
    resized = _pil_resize(masks.face_mask, int(img_size[1]), int(img_size[0]))
    return torch.from_numpy(resized).to(torch.float32).div(255).expand(3, -1, -1).contiguous()


def attention_masks(masks: HalloMasks, img_size: tuple[int, int] = (512, 512)) -> dict[str, list[torch.Tensor]]:
    """Hallo's attention-mask tensors: {"full", "face", "lip"} -> four float32 [1, side^2] tensors
    with side = img_size[0] // 8, // 16, // 32, // 64 (64, 32, 16, 8 at 512), made from
    sep_background, sep_face and sep_lip by PIL bilinear resize and / 255."""
    sources = {"full": masks.sep_background, "face": masks.sep_face, "lip": masks.sep_lip}
    sides = [int(img_size[0]) // factor for factor in (8, 16, 32, 64)]
    return {kind: [torch.from_numpy(_pil_resize(mask, side, side)).to(torch.float32).div(255).view(1, -1)
                   for side in sides]
            for kind, mask in sources.items()}


# ---------------------------------------------------------------------------------------------
# Landmark sources.

def landmarker_task(folder: str | os.PathLike) -> Path:
    """Where Hallo keeps its MediaPipe model: <face_analysis>/models/face_landmarker_v2_with_blendshapes.task."""
    from ...faces.onnx_models import models_folder

    return models_folder(folder) / LANDMARKER_TASK


def mediapipe_available() -> bool:
    """Whether the optional mediapipe package is installed (probed without importing it)."""
    return importlib.util.find_spec("mediapipe") is not None


def mediapipe_landmarks(image_rgb: np.ndarray, task_file: str | os.PathLike) -> np.ndarray:
    """Hallo's landmark step: MediaPipe FaceLandmarker (IMAGE mode, default options) on an RGB uint8
    [H, W, 3] image -> float64 (478, 2) pixels (x * W, y * H). Raises FaceNotFoundError when it does
    not find exactly one face (Hallo crashes there)."""
    task_file = Path(task_file)
    if not mediapipe_available():
        raise ValueError(
            "Hallo masks: the MediaPipe landmark route needs the mediapipe package, which is not installed: "
            "pip install mediapipe, or use the 106-point route (landmark_source='insightface')"
        )
    if not task_file.is_file():
        raise FileNotFoundError(
            f"Hallo masks: no MediaPipe landmarker at '{task_file}'; {LANDMARKER_TASK} comes with a Hallo "
            "download (pretrained_models/face_analysis/models/), or use landmark_source='insightface'"
        )
    import mediapipe as mp

    image_rgb = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    height, width = image_rgb.shape[:2]
    options = mp.tasks.vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(task_file)),
        running_mode=mp.tasks.vision.RunningMode.IMAGE)
    with mp.tasks.vision.FaceLandmarker.create_from_options(options) as landmarker:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image_rgb))
    if len(result.face_landmarks) != 1:
        raise FaceNotFoundError(
            f"no face found in the reference image ({width}x{height}) by MediaPipe's face landmarker "
            f"({len(result.face_landmarks)} faces); use a photo with one clear, frontal face"
        )
    return np.array([[p.x * width, p.y * height] for p in result.face_landmarks[0]], dtype=np.float64)


def reference_masks(image, folder: str | os.PathLike, face_expand_ratio: float = FACE_EXPAND_RATIO,
                    landmark_source: str = "auto", backend: str = "auto") -> tuple[HalloMasks, str]:
    """Hallo's masks for our RGB float image tensor [H, W, 3] and a face-analysis folder.

    landmark_source: "mediapipe" (Hallo's own route; needs the mediapipe package and the .task file
    in the models folder), "insightface" (2d106det from the same folder, an approximation), or
    "auto" (MediaPipe when both are there, else 2d106det). Returns (masks, the source used).
    Raises FaceNotFoundError when no face is found.
    """
    from ...faces.face_analysis import bgr_from_image, load_face_analysis

    if landmark_source not in LANDMARK_SOURCES:
        raise ValueError(f"Hallo masks: unknown landmark_source {landmark_source!r}; use one of "
                         f"{', '.join(LANDMARK_SOURCES)}")
    bgr = bgr_from_image(image)
    height, width = bgr.shape[:2]
    task = landmarker_task(folder)
    if landmark_source == "mediapipe" or (landmark_source == "auto" and mediapipe_available() and task.is_file()):
        landmarks = mediapipe_landmarks(bgr[:, :, ::-1], task)
        return masks_from_mediapipe(landmarks, height, width, face_expand_ratio), "mediapipe"
    if landmark_source == "auto":
        logger.info("Hallo masks: using 2d106det landmarks (%s)", "no " + LANDMARKER_TASK + " in the models folder"
                    if mediapipe_available() else "mediapipe is not installed")
    analysis = load_face_analysis(folder, backend)
    face = analysis.largest(analysis.detect(bgr))
    if face is None:
        raise FaceNotFoundError(
            f"no face found in the reference image ({width}x{height}) by the face detector in "
            f"'{analysis.detector.path}'; Hallo needs a face for its lip and face masks: use a photo with a "
            "clear, frontal face, larger in the frame"
        )
    return masks_from_106(analysis.landmarks_106(bgr, face), height, width, face_expand_ratio), "insightface"
