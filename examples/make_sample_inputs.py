"""Write a synthetic sample portrait, its face mask and a voice-like audio track.

Used by `make demo` so the main job runs with no downloads. The portrait is a drawn face, so the
face region is given as a mask (a real photo would be found by the face detector instead).

    python examples/make_sample_inputs.py OUT_DIR [--seconds 3.0]
"""

from __future__ import annotations

import argparse
import math
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def portrait(size: int = 512) -> tuple[Image.Image, Image.Image]:
    image = Image.new("RGB", (size, size), (70, 110, 150))
    draw = ImageDraw.Draw(image)
    s = size / 512
    box = [int(156 * s), int(110 * s), int(356 * s), int(380 * s)]
    draw.rectangle([int(120 * s), int(360 * s), int(392 * s), size], fill=(60, 60, 80))  # shoulders
    draw.ellipse([box[0] - int(20 * s), box[1] - int(40 * s), box[2] + int(20 * s), int(260 * s)],
                 fill=(60, 40, 30))  # hair
    draw.ellipse(box, fill=(225, 180, 150))  # face
    for x in (206, 306):  # eyes
        draw.ellipse([int((x - 18) * s), int(210 * s), int((x + 18) * s), int(232 * s)], fill=(255, 255, 255))
        draw.ellipse([int((x - 8) * s), int(213 * s), int((x + 8) * s), int(229 * s)], fill=(40, 30, 20))
    draw.polygon([(int(256 * s), int(240 * s)), (int(244 * s), int(290 * s)), (int(268 * s), int(290 * s))],
                 fill=(205, 155, 125))  # nose
    draw.ellipse([int(221 * s), int(315 * s), int(291 * s), int(335 * s)], fill=(160, 60, 60))  # mouth
    mask = Image.new("L", (size, size), 0)
    pad = int(30 * s)
    ImageDraw.Draw(mask).rectangle([box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad], fill=255)
    return image, mask


def voice(seconds: float, rate: int = 16000) -> np.ndarray:
    """Syllable-like bursts of a pitched, harmonic tone (~4 syllables a second)."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 30 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * math.pi * 4 * t), 0, None) ** 0.5
    return (0.25 * envelope * tone).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, mask = portrait()
    image.save(out / "portrait.png")
    mask.save(out / "portrait_mask.png")
    samples = (voice(args.seconds) * 32767).astype(np.int16)
    with wave.open(str(out / "voice.wav"), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(samples.tobytes())
    print(f"wrote {out}/portrait.png, portrait_mask.png, voice.wav ({args.seconds:g} s)")


if __name__ == "__main__":
    main()
