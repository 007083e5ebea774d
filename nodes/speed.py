"""SpeedControl: how fast the head moves (EMO's speed layers) -> EMO_SPEED."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from emo.pipeline import SpeedCurve

logger = logging.getLogger(__name__)

SPEECH_SPEED = 0.5
SINGING_SPEED = 1.2


@dataclass(frozen=True)
class EMOSpeed:
    """What flows through an EMO_SPEED link: one speed, or keyframes (seconds, speed)."""

    speed: float
    keyframes: tuple[tuple[float, float], ...] = ()

    def for_pipeline(self):
        """A float or an emo.pipeline.SpeedCurve (the pipeline samples it at each frame's time)."""
        return SpeedCurve(keyframes=list(self.keyframes)) if self.keyframes else self.speed

    def values(self) -> list[float]:
        return [v for _, v in self.keyframes] if self.keyframes else [self.speed]


def parse_keyframes(text: str) -> tuple[tuple[float, float], ...]:
    """'0: 0.5\\n2.5: 1.2' (one 'seconds: speed' pair per line or comma-separated) -> pairs.

    Blank lines and '#' comments are ignored.
    """
    node = "EMO Speed Control"
    pairs = []
    entries = [part for line in text.splitlines() for part in line.split("#", 1)[0].split(",")]
    for number, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if not entry:
            continue
        seconds, sep, speed = entry.partition(":")
        try:
            if not sep:
                raise ValueError
            pair = (float(seconds), float(speed))
        except ValueError:
            raise ValueError(
                f"{node}: cannot read keyframe {number} {entry!r}; write 'seconds: speed' pairs, one per "
                "line, e.g. '0: 0.5' then '2.5: 1.2'"
            ) from None
        if not all(math.isfinite(v) for v in pair) or pair[0] < 0 or pair[1] < 0:
            raise ValueError(f"{node}: keyframe {number} {entry!r} needs a time >= 0 s and a speed >= 0")
        pairs.append(pair)
    times = [t for t, _ in pairs]
    if len(set(times)) != len(times):
        raise ValueError(f"{node}: two keyframes share a time in {pairs}; give each time once")
    return tuple(sorted(pairs))


def make_speed(speed: float, keyframes: str = "") -> EMOSpeed:
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"EMO Speed Control: speed must be >= 0, got {speed}")
    return EMOSpeed(speed=float(speed), keyframes=parse_keyframes(keyframes or ""))


class EMOSpeedControl:
    DESCRIPTION = (
        "Sets how much and how fast the head moves (EMO's speed layers). One value for the whole "
        "video, or keyframes that change it over time (linearly interpolated)."
    )
    CATEGORY = "EMO/conditioning"
    FUNCTION = "make"
    RETURN_TYPES = ("EMO_SPEED",)
    RETURN_NAMES = ("speed",)
    OUTPUT_TOOLTIPS = ("Head-motion speed for EMO Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "speed": ("FLOAT", {
                    "default": SPEECH_SPEED, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": f"Head-motion speed. Presets: speech ~{SPEECH_SPEED} (calm, 0.1-1.0), singing "
                               f"~{SINGING_SPEED} (lively, 1.0-1.3). Far outside the range the checkpoint "
                               "was trained on gives unpredictable motion.",
                }),
            },
            "optional": {
                "keyframes": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "Optional per-frame curve: 'seconds: speed' pairs, one per line (e.g. '0: 0.5' "
                               "and '4: 1.2' ramps from speech to singing over 4 s). Values between "
                               "keyframes are interpolated, held before the first and after the last. "
                               "When set, it replaces the speed value.",
                }),
            },
        }

    def make(self, speed, keyframes=""):
        return (make_speed(speed, keyframes),)
