"""Synthetic training videos: the astronaut photo's head (scikit-image, bundled; Haar finds it)
moving over a textured background, with a voice-like sound track; and the bad cases."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from emo.video import write_video
from tests.helpers import sine

HEAD_SIZE = 96  # pixels; Haar needs the face (about half of this) to be >= 24 px


def astronaut_head(size: int = HEAD_SIZE) -> np.ndarray:
    import skimage.data

    head = skimage.data.astronaut()[20:220, 125:325]  # 200x200 around the face
    return cv2.resize(head, (size, size), interpolation=cv2.INTER_AREA)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 140, size=(6, 8, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def talking_frames(seconds: float, fps: float, *, width: int = 160, height: int = 120, face: bool = True,
                   sway_px: float = 12.0, roll_degrees: float = 4.0, seed: int = 0) -> np.ndarray:
    """uint8 [N, H, W, 3]: a head swaying left-right and rolling a little (period 2 s)."""
    count = int(round(seconds * fps))
    base = background(width, height, seed)
    head = astronaut_head()
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        t = i / fps
        frame = base.copy()
        if face:
            phase = math.sin(2 * math.pi * t / 2.0)
            cx, cy = width / 2 + sway_px * phase, height / 2
            matrix = cv2.getRotationMatrix2D((HEAD_SIZE / 2, HEAD_SIZE / 2), roll_degrees * phase, 1.0)
            matrix[:, 2] += (cx - HEAD_SIZE / 2, cy - HEAD_SIZE / 2)
            mask = cv2.warpAffine(np.ones(head.shape[:2], np.uint8), matrix, (width, height))
            moved = cv2.warpAffine(head, matrix, (width, height))
            frame[mask > 0] = moved[mask > 0]
        frames[i] = frame
    return frames


def write_talking_video(path: Path, seconds: float = 2.0, *, fps: float = 30.0, audio_seconds: float | None = None,
                        audio: bool = True, face: bool = True, seed: int = 0, **motion) -> Path:
    path = Path(path)
    frames = talking_frames(seconds, fps, face=face, seed=seed, **motion)
    sound = None
    if audio:
        rate = 16000
        sound = (sine(seconds if audio_seconds is None else audio_seconds, rate, freq=200 + 40 * seed, seed=seed), rate)
    fmt = "vp9-webm" if path.suffix == ".webm" else "h264-mp4"
    return write_video(path, torch.from_numpy(frames), fps, audio=sound, format=fmt, crf=18)


def make_video_folder(folder: Path) -> dict[str, str]:
    """Every case the prepare step must handle; returns file name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    write_talking_video(folder / "talk.mp4", 2.0, seed=0)
    (folder / "more").mkdir(exist_ok=True)
    write_talking_video(folder / "more" / "sing.webm", 2.0, fps=25.0, seed=1, sway_px=20.0, roll_degrees=8.0)
    write_talking_video(folder / "no_face.mp4", 1.6, face=False)
    write_talking_video(folder / "no_audio.mp4", 1.6, audio=False)
    write_talking_video(folder / "short.mp4", 0.4)
    write_talking_video(folder / "mismatch.mp4", 2.0, audio_seconds=0.8)
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {"talk.mp4": "ok", "more/sing.webm": "ok", "no_face.mp4": "no face found",
            "no_audio.mp4": "no audio stream", "short.mp4": "too short", "mismatch.mp4": "lengths differ",
            "corrupt.mp4": "cannot be opened"}
