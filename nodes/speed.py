"""SpeedControl: how fast the head moves (EMO's speed layers) -> EMO_SPEED: one speed, keyframes,
or a curve that follows the audio's loudness (emo.speed_from_audio)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..emo.pipeline import SpeedCurve
from ..emo.speed_from_audio import DEFAULT_MAX_SPEED, DEFAULT_MIN_SPEED, DEFAULT_SMOOTHING, speed_from_audio

logger = logging.getLogger(__name__)

SPEECH_SPEED = 0.5
SINGING_SPEED = 1.2
MODES = ("speed / keyframes", "from audio")


@dataclass(frozen=True)
class EMOSpeed:
    """What flows through an EMO_SPEED link: one speed, or keyframes (seconds, speed), or (mode
    "from audio") the bounds of a curve made from the audio's loudness once the frame count and
    fps are known: from `audio` (ComfyUI AUDIO) when given, else from the audio the sampler
    generates for."""

    speed: float
    keyframes: tuple[tuple[float, float], ...] = ()
    mode: str = MODES[0]
    min_speed: float = DEFAULT_MIN_SPEED
    max_speed: float = DEFAULT_MAX_SPEED
    smoothing: float = DEFAULT_SMOOTHING  # seconds
    audio: dict | None = field(default=None, compare=False, repr=False)

    @property
    def from_audio(self) -> bool:
        return self.mode == "from audio"

    def for_pipeline(self, num_frames: int | None = None, fps: float | None = None, audio=None):
        """A float, an emo.pipeline.SpeedCurve (the pipeline samples it at each frame's time), or
        in mode "from audio" one speed per frame (num_frames,) from this speed's own audio, else
        from `audio` = (waveform, sample_rate), the audio being generated for."""
        if not self.from_audio:
            return SpeedCurve(keyframes=list(self.keyframes)) if self.keyframes else self.speed
        if num_frames is None or fps is None:
            raise ValueError("EMO Speed Control: the 'from audio' speed needs the video's frame count and fps; "
                             "connect it to EMO Sampler")
        if self.audio is not None:
            waveform, sample_rate = self.audio["waveform"], self.audio["sample_rate"]
            if audio is not None:
                own, generated = waveform.shape[-1] / sample_rate, audio[0].shape[-1] / audio[1]
                if abs(own - generated) > 1.0 / fps:
                    logger.warning("EMO Speed Control: its audio is %.2f s but the video's is %.2f s; connect "
                                   "EMO Audio Encode's audio output (the trimmed audio) so the speed lines up", own,
                                   generated)
        elif audio is not None:
            waveform, sample_rate = audio
        else:
            raise ValueError("EMO Speed Control: the 'from audio' speed has no audio; connect EMO Audio Encode's audio "
                             "output to EMO Speed Control's audio input")
        return speed_from_audio(waveform, int(sample_rate), float(fps), int(num_frames), self.min_speed,
                                self.max_speed, self.smoothing)

    def values(self) -> list[float]:
        if self.from_audio:
            return [self.min_speed, self.max_speed]
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


def make_speed(speed: float, keyframes: str = "", mode: str = MODES[0], min_speed: float = DEFAULT_MIN_SPEED,
               max_speed: float = DEFAULT_MAX_SPEED, smoothing: float = DEFAULT_SMOOTHING,
               audio: dict | None = None) -> EMOSpeed:
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"EMO Speed Control: speed must be >= 0, got {speed}")
    if mode not in MODES:
        raise ValueError(f"EMO Speed Control: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "from audio":
        if not (math.isfinite(min_speed) and math.isfinite(max_speed) and 0 <= min_speed <= max_speed):
            raise ValueError(f"EMO Speed Control: from audio needs 0 <= min_speed <= max_speed, got {min_speed} and "
                             f"{max_speed}; swap them or raise max_speed")
        if not math.isfinite(smoothing) or smoothing < 0:
            raise ValueError(f"EMO Speed Control: smoothing must be >= 0 seconds, got {smoothing}")
        if audio is not None and not (isinstance(audio, dict) and "waveform" in audio and "sample_rate" in audio):
            raise ValueError(f"EMO Speed Control: the audio input must be an AUDIO (from LoadAudio or AudioEncode), got "
                             f"{type(audio).__name__}")
        if keyframes and keyframes.strip():
            logger.info("EMO Speed Control: mode 'from audio' ignores the keyframes")
        return EMOSpeed(speed=float(speed), mode=mode, min_speed=float(min_speed), max_speed=float(max_speed),
                        smoothing=float(smoothing), audio=audio)
    return EMOSpeed(speed=float(speed), keyframes=parse_keyframes(keyframes or ""))


class EMOSpeedControl:
    DESCRIPTION = (
        "Sets how much and how fast the head moves (EMO's speed layers). One value for the whole "
        "video, keyframes that change it over time (linearly interpolated), or, in mode 'from audio', "
        "a speed that follows the voice's loudness between min_speed and max_speed (songs nod more "
        "in loud passages)."
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
                "mode": (list(MODES), {
                    "default": MODES[0],
                    "tooltip": "speed / keyframes: the values above. from audio: each frame's speed follows "
                               "the audio's loudness (relative to its loud passages; silence = min_speed).",
                }),
                "min_speed": ("FLOAT", {
                    "default": DEFAULT_MIN_SPEED, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": "From audio: the speed in quiet passages and silence.",
                }),
                "max_speed": ("FLOAT", {
                    "default": DEFAULT_MAX_SPEED, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": "From audio: the speed in the loudest passages.",
                }),
                "smoothing": ("FLOAT", {
                    "default": DEFAULT_SMOOTHING, "min": 0.0, "max": 5.0, "step": 0.05,
                    "tooltip": "From audio: seconds over which the loudness is averaged (more = calmer "
                               "changes of speed; 0 follows every syllable).",
                }),
                "audio": ("AUDIO", {
                    "tooltip": "From audio: the audio to follow (AudioEncode's audio output, so a trim "
                               "matches). Without it, the audio EMOSampler generates for is used.",
                }),
            },
        }

    def make(self, speed, keyframes="", mode=MODES[0], min_speed=DEFAULT_MIN_SPEED, max_speed=DEFAULT_MAX_SPEED,
             smoothing=DEFAULT_SMOOTHING, audio=None):
        return (make_speed(speed, keyframes, mode, min_speed, max_speed, smoothing, audio),)
