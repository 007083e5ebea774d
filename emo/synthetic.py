"""Synthetic talkers: procedurally drawn faces whose lips, eyes and head follow known signals.

A talker is a short video of a cartoon face plus a speech-like sound track, generated from one
integer seed, with its ground truth per frame: how far the mouth is open, the head's angle, the
eyes' openness and the face box. It exists so the whole system can be trained and *measured*
without downloading anything: `emo synth` writes a folder of them for `emo prepare`, and
`emo evaluate` draws held-out ones to check that generated lips follow the audio, the identity
follows the reference and head motion follows the requested speed.

Seed convention: training data uses seeds < ``EVALUATION_SEED_START`` (1_000_000); evaluation
draws its talkers from seeds >= it, so held-out voices and identities are never trained on.

Design: large, high-contrast, simple shapes a tiny diffusion model can learn at 64x64 pixels.
The face is an ellipse about 0.7 of the frame tall, with a hair cap and fringe, eyebrows, eyes
(white with a dark iris) that blink, a nose shade, lips, and a dark mouth opening whose height is
``mouth_open`` times a maximum. Shapes are rendered analytically with a one-pixel anti-aliased
edge, at any size; everything is in units of the frame side, so 64, 128 and 256 px renders of a
seed are the same picture.

The signals (all exact, see the functions):

* audio: voiced syllables (a harmonic tone with a pitch contour and two formants, under a smooth
  envelope) in phrases separated by pauses, at 16 kHz, with a faint noise floor;
  see :func:`synthesize_voice`.
* mouth: ``mouth_open[f] = clip((rms(f) / VOICE_LEVEL - 0.15) / 0.7, 0, 1)``, where ``rms(f)`` is
  the root mean square of the waveform over the 40 ms window centred on frame ``f``'s centre time
  ``(f + 0.5) / fps`` (zero outside the audio). No lead or lag: the mouth shows the loudness of the
  sound heard during that frame. See :func:`mouth_opening`.
* head: a tilt about the neck (a pivot HEAD_PIVOT face half-heights below the face centre), so the
  face rolls and sways sideways together. The head nods with the voice: ``angle[f] = HEAD_GAIN *
  speed[f] * nod[f]`` degrees, where ``nod`` is the mouth opening smoothed by a Gaussian of
  NOD_SIGMA_FRAMES frames (so 0 in pauses: upright, tilting counter-clockwise as the voice gets
  loud). HEAD_GAIN makes the mean rotation speed ``mean |angle[f] - angle[f - 1]|`` about
  ``DEGREES_PER_SPEED * speed`` degrees per frame (1.00 on average over the training talkers, spread
  about 18 % between voices). The motion is a function of the audio, so a model can learn it, and
  its size is set by the speed, so the speed can steer it. See :func:`head_angles`.
* eyes: blinks at random times, 0.2 s each (closed at the middle).
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Hz; wav2vec2's rate, so the pipeline uses the audio without resampling."""

EVALUATION_SEED_START = 1_000_000
"""Seeds >= this are reserved for evaluation (held-out identities and voices)."""

VOICE_LEVEL = 0.12
"""RMS of the waveform inside a syllable at envelope 1 (the voice's full loudness)."""

MOUTH_SILENT = 0.15
"""Loudness (rms / VOICE_LEVEL) at and below which the mouth is closed."""

MOUTH_RANGE = 0.7
"""Loudness above MOUTH_SILENT at which the mouth is fully open (0.85 of full loudness)."""

MOUTH_WINDOW_SECONDS = 0.040
"""Loudness window, centred on each frame's centre time."""

DEGREES_PER_SPEED = 1.0
"""Mean head rotation per frame, in degrees, per unit of speed (see HEAD_GAIN)."""

NOD_SIGMA_FRAMES = 2.0
"""Standard deviation, in frames, of the Gaussian that smooths the mouth opening into the nod."""

HEAD_GAIN = 21.3
"""Degrees of tilt per unit of speed at a nod of 1: the smoothed mouth opening moves by 0.047 per
frame on average (40 training voices of 3 s), so a gain of 1 / 0.047 gives a mean rotation speed of
DEGREES_PER_SPEED degrees per frame per unit of speed."""

HEAD_PIVOT = 1.1
"""The neck: the head tilts about a point this many face half-heights below the face centre."""

MAX_ANGLE = 30.0
"""Degrees; no head angle exceeds it (the nod is at most 1 and training speeds at most 1.4)."""

BLINK_SECONDS = 0.2

# Generator streams: each part of a talker draws from its own random stream of the seed, so a
# talker with another speed keeps its identity, voice and blinks.
# (Stream 2 drew the head's random turns before the head nodded with the voice; the numbers stay.)
_IDENTITY, _VOICE, _BLINK, _SPEED = 0, 1, 3, 4


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------


@dataclass
class Identity:
    """How one synthetic person looks. Lengths are fractions of the frame side; colours RGB 0..255.

    The face is an ellipse with centre (cx, cy) and semi-axes (face_a, face_b) (horizontal,
    vertical); positions of features are in face units (fractions of face_a horizontally, of face_b
    vertically, from the face centre, +y down)."""

    cx: float
    cy: float
    face_a: float
    face_b: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    hair_width: float  # hair cap semi-axis / face semi-axis, horizontally
    hair_top: float  # how far (face_b units) the cap reaches above the face's top
    hair_length: float  # how far down the sides the hair hangs (face_b units from the centre)
    fringe: float  # the fringe covers the face above -fringe * face_b
    eye_x: float
    eye_y: float
    eye_w: float  # eye semi-axes (face_a units, face_b units)
    eye_h: float
    brow_gap: float  # brow centre above the eye centre (face_b units)
    brow_tilt: float  # degrees; positive raises the outer ends
    mouth_y: float
    mouth_w: float  # mouth semi-width (face_a units)
    mouth_max: float  # semi-height of the fully open mouth (face_b units)
    voice_f0: float  # Hz, the voice's base pitch

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 5)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _far(colour: np.ndarray, others, minimum: float) -> bool:
    return all(np.linalg.norm(colour - o) >= minimum for o in others)


def _pick(rng: np.random.Generator, sample, others, minimum: float) -> np.ndarray:
    """A colour from `sample(rng)` at least `minimum` (RGB distance) from every colour in `others`."""
    for _ in range(200):
        colour = sample(rng)
        if _far(colour, others, minimum):
            return colour
    raise AssertionError("colour rejection sampling did not converge")  # cannot happen with these palettes


def _skin(rng):
    return _rgb(rng.uniform(0.03, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.45, 0.98))


def _hair(rng):
    kind = rng.random()
    if kind < 0.55:  # black .. brown .. blond
        return _rgb(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.85))
    if kind < 0.7:  # grey / white
        return np.full(3, rng.uniform(90, 235))
    return _rgb(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.85))  # dyed


def _background(rng):
    return _rgb(rng.random(), rng.uniform(0.15, 0.65), rng.uniform(0.25, 0.95))


def make_identity(seed: int) -> Identity:
    """The look (and base pitch) of the talker with this seed."""
    rng = _rng(seed, _IDENTITY)
    skin = _skin(rng)
    hair = _pick(rng, _hair, [skin], 90.0)
    background = _pick(rng, _background, [skin, hair], 80.0)
    iris = _rgb(rng.choice([0.08, 0.3, 0.55, 0.6]), rng.uniform(0.4, 0.8), rng.uniform(0.12, 0.3))
    lips = np.clip(skin * np.array([0.82, 0.6, 0.6]) + np.array([30, 0, 5]), 0, 255)
    u = rng.uniform
    return Identity(
        cx=0.5 + u(-0.02, 0.02), cy=0.53 + u(-0.02, 0.02),
        face_a=u(0.24, 0.30), face_b=u(0.30, 0.36),
        skin=tuple(int(round(c)) for c in skin), hair=tuple(int(round(c)) for c in hair),
        background=tuple(int(round(c)) for c in background), iris=tuple(int(round(c)) for c in iris),
        lips=tuple(int(round(c)) for c in lips),
        hair_width=u(1.05, 1.22), hair_top=u(0.08, 0.3), hair_length=u(-0.3, 0.9), fringe=u(0.5, 0.72),
        eye_x=u(0.36, 0.46), eye_y=u(-0.3, -0.18), eye_w=u(0.16, 0.21), eye_h=u(0.1, 0.13),
        brow_gap=u(0.17, 0.22), brow_tilt=u(-12, 12),
        mouth_y=u(0.42, 0.52), mouth_w=u(0.32, 0.44), mouth_max=u(0.18, 0.24),
        voice_f0=float(np.exp(u(np.log(95), np.log(240)))),
    )


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float,
             tilt: float = 0.0) -> np.ndarray:
    """Coverage 0..1 of an ellipse (centre (cu, cv), semi-axes a, b in pixels, tilted by `tilt`
    radians) at pixel-centre coordinates u, v: 1 inside, 0 outside, a one-pixel linear ramp across
    the edge (from an estimate of the signed distance) for anti-aliasing."""
    if a <= 0 or b <= 0:
        return np.zeros_like(u)
    du, dv = u - cu, v - cv
    if tilt:
        c, s = math.cos(tilt), math.sin(tilt)
        du, dv = c * du + s * dv, -s * du + c * dv
    level = np.sqrt((du / a) ** 2 + (dv / b) ** 2)
    gradient = np.sqrt((du / a ** 2) ** 2 + (dv / b ** 2) ** 2)
    # Signed distance ~ (level - 1) / |grad level|; level / |grad(level^2 / 2)| is finite at the centre.
    scale = np.where(gradient > 1e-12, level / np.maximum(gradient, 1e-12), min(a, b))
    distance = (level - 1.0) * scale
    # The estimate is poor far from very thin ellipses; the true distance is at least the distance
    # to the bounding box.
    distance = np.maximum(distance, np.maximum(np.abs(du) - a, np.abs(dv) - b))
    # Shapes thinner than a pixel cover a pixel in proportion to their thickness.
    return np.clip(0.5 - distance, 0.0, 1.0) * min(1.0, 2 * min(a, b))


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour) -> None:
    canvas += coverage[..., None] * (np.asarray(colour, dtype=np.float64) - canvas)


def render_frame(identity: Identity, size: int, angle: float = 0.0, mouth: float = 0.0,
                 eyes: float = 1.0) -> np.ndarray:
    """One frame of a talker: uint8 [size, size, 3].

    angle: head tilt in degrees, positive = counter-clockwise on screen (the whole head moves
    left), about the neck (HEAD_PIVOT face half-heights below the face centre); mouth: opening
    0..1; eyes: openness 0..1 (0 = closed)."""
    p = identity
    grid = (np.arange(size, dtype=np.float64) + 0.5)
    x, y = np.meshgrid(grid, grid)
    a, b = p.face_a * size, p.face_b * size
    neck = HEAD_PIVOT * b  # the pivot's distance below the face centre
    dx, dy = x - p.cx * size, y - (p.cy * size + neck)
    theta = math.radians(angle)
    # Head coordinates (pixels from the upright face centre, +v down): undo the tilt about the neck.
    u = math.cos(theta) * dx - math.sin(theta) * dy
    v = math.sin(theta) * dx + math.cos(theta) * dy + neck

    canvas = np.empty((size, size, 3), dtype=np.float64)
    canvas[:] = p.background
    hair_b = b * (1 + p.hair_top / 2)
    hair_cap = _ellipse(u, v, 0, -b * p.hair_top / 2, a * p.hair_width, hair_b)
    # Behind the face: the cap above the face centre, and the sides down to hair_length.
    sides = np.clip(0.5 - (v - p.hair_length * b), 0, 1)
    _paint(canvas, hair_cap * sides, p.hair)
    face = _ellipse(u, v, 0, 0, a, b)
    _paint(canvas, face, p.skin)
    skin = np.asarray(p.skin, dtype=np.float64)
    _paint(canvas, face * _ellipse(u, v, 0, 0.18 * b, 0.1 * a, 0.12 * b), skin * 0.8)  # nose shade

    # Mouth: lips around a dark opening whose semi-height is mouth * mouth_max.
    mouth = float(np.clip(mouth, 0.0, 1.0))
    opening = mouth * p.mouth_max * b
    lip = 0.07 * b
    _paint(canvas, _ellipse(u, v, 0, p.mouth_y * b, p.mouth_w * a, opening + lip), p.lips)
    _paint(canvas, _ellipse(u, v, 0, p.mouth_y * b, p.mouth_w * a * 0.85, opening), (45, 12, 20))

    # Eyes: a dark lid line, the white, the iris clipped to the white; blinking squeezes them.
    eyes = float(np.clip(eyes, 0.0, 1.0))
    ew, eh = p.eye_w * a, max(p.eye_h * b * eyes, 0.0)
    brow_colour = np.asarray(p.hair, dtype=np.float64) * 0.6
    for side in (-1, 1):
        ex, ey = side * p.eye_x * a, p.eye_y * b
        # A shaded socket and a large dark iris: OpenCV's Haar face detector keys on eye regions
        # darker than the cheeks (at 128 px it finds the face in ~60 % of frames with them, ~35 %
        # without; at 64 px in ~20 % either way: the ground-truth boxes are written beside each video).
        _paint(canvas, _ellipse(u, v, ex, ey - 0.05 * b, 1.5 * ew, 1.9 * p.eye_h * b), skin * 0.7)
        _paint(canvas, _ellipse(u, v, ex, ey, ew + 0.7, eh + 0.7), (30, 20, 20))
        white = _ellipse(u, v, ex, ey, ew, eh)
        _paint(canvas, white, (240, 240, 236))
        _paint(canvas, white * _ellipse(u, v, ex, ey, 0.8 * ew, 0.8 * ew), p.iris)
        tilt = -side * math.radians(p.brow_tilt)
        _paint(canvas, _ellipse(u, v, ex, ey - p.brow_gap * b - 0.5 * p.eye_h * b,
                                ew * 1.25, 0.05 * b, tilt), brow_colour)

    # Fringe: the hair cap over the top of the face, with a slightly wavy edge.
    edge = -p.fringe * b + 0.06 * b * np.cos(np.pi * u / a * 2.5)
    _paint(canvas, hair_cap * np.clip(0.5 - (v - edge), 0, 1), p.hair)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def face_box(identity: Identity, size: int, angle: float = 0.0) -> tuple[float, float, float, float]:
    """The bounding box (x0, y0, x1, y1), float pixels, of the face ellipse tilted by `angle` about
    the neck."""
    theta = math.radians(angle)
    a, b = identity.face_a * size, identity.face_b * size
    half_w = math.hypot(a * math.cos(theta), b * math.sin(theta))
    half_h = math.hypot(a * math.sin(theta), b * math.cos(theta))
    neck = HEAD_PIVOT * b  # the face centre swings on a circle of this radius about the pivot
    cx = identity.cx * size - neck * math.sin(theta)
    cy = identity.cy * size + neck * (1 - math.cos(theta))
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


# --------------------------------------------------------------------------------------------------
# Audio, mouth, head, eyes
# --------------------------------------------------------------------------------------------------


def synthesize_voice(seed: int, seconds: float, f0: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A speech-like waveform, float32 [round(seconds * sample_rate)], values within about +-0.5.

    Phrases of 2-7 syllables separated by pauses (0.25-0.7 s; a lead-in of 0.05-0.4 s). A syllable
    lasts 0.1-0.3 s with gaps of 0.02-0.15 s; its envelope is sin(pi t / d)^0.7 times a peak
    0.35..1. Inside, a harmonic tone: the pitch glides from the syllable's start pitch (f0 x
    0.85..1.2, falling over the phrase) by -12..+12 %, harmonics up to 4 kHz weighted by 1 / k^0.7
    and two formant resonances (a vowel per syllable), normalised to RMS 1 at envelope 1; the whole
    is scaled by VOICE_LEVEL. A noise floor of RMS 0.002 is added."""
    rng = _rng(seed, _VOICE)
    total = int(round(seconds * sample_rate))
    signal = np.zeros(total, dtype=np.float64)
    t = rng.uniform(0.05, 0.4)
    while t < seconds:
        syllables = int(rng.integers(2, 8))
        for index in range(syllables):
            duration = rng.uniform(0.1, 0.3)
            start, count = int(t * sample_rate), int(duration * sample_rate)
            count = min(count, total - start)
            if count <= 0:
                break
            local = np.arange(count) / sample_rate
            envelope = np.sin(np.pi * local / duration) ** 0.7 * rng.uniform(0.35, 1.0)
            pitch_start = f0 * rng.uniform(0.85, 1.2) * (1 - 0.15 * index / syllables)
            pitch = pitch_start * (1 + rng.uniform(-0.12, 0.12) * local / duration)
            phase = 2 * np.pi * np.cumsum(pitch) / sample_rate + rng.uniform(0, 2 * np.pi)
            formant1, formant2 = rng.uniform(300, 850), rng.uniform(900, 2400)
            harmonics = np.arange(1, int(4000 // pitch_start) + 1)
            centre = harmonics * pitch_start
            weights = harmonics ** -0.7 * (1 + 4 * np.exp(-((centre - formant1) / 120) ** 2)
                                           + 2.5 * np.exp(-((centre - formant2) / 180) ** 2))
            weights /= np.sqrt(np.sum(weights ** 2) / 2)  # RMS 1 for a steady tone
            tone = np.sin(np.outer(phase, harmonics)) @ weights
            signal[start:start + count] += envelope * tone
            t += duration + rng.uniform(0.02, 0.15)
        t += rng.uniform(0.25, 0.7)
    signal = VOICE_LEVEL * signal + 0.002 * rng.standard_normal(total)
    return signal.astype(np.float32)


def frame_loudness(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS of `waveform` over MOUTH_WINDOW_SECONDS centred on each frame's centre (f + 0.5) / fps,
    zero-padded outside the audio, divided by VOICE_LEVEL: float64 [num_frames]."""
    waveform = np.asarray(waveform, dtype=np.float64).reshape(-1)
    half = int(round(MOUTH_WINDOW_SECONDS * sample_rate / 2))
    squares = np.concatenate([[0.0], np.cumsum(waveform ** 2)])
    centres = np.round((np.arange(num_frames) + 0.5) / fps * sample_rate).astype(np.int64)
    lo = np.clip(centres - half, 0, len(waveform))
    hi = np.clip(centres + half, 0, len(waveform))
    return np.sqrt((squares[hi] - squares[lo]) / (2 * half)) / VOICE_LEVEL


def mouth_opening(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """The mouth opening 0..1 for each frame: clip((loudness - MOUTH_SILENT) / MOUTH_RANGE, 0, 1)
    with loudness from :func:`frame_loudness`. float32 [num_frames]."""
    loudness = frame_loudness(waveform, sample_rate, fps, num_frames)
    return np.clip((loudness - MOUTH_SILENT) / MOUTH_RANGE, 0.0, 1.0).astype(np.float32)


def head_angles(mouth_open: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    """Head tilt per frame in degrees, float32 [F]: ``HEAD_GAIN * speeds * nod`` with ``nod`` the
    mouth opening smoothed by a Gaussian of NOD_SIGMA_FRAMES frames (edges: the nearest value
    repeated). Upright (0) while the voice is silent, counter-clockwise while it is loud."""
    mouth = np.asarray(mouth_open, dtype=np.float64).reshape(-1)
    speeds = np.asarray(speeds, dtype=np.float64).reshape(-1)
    if mouth.shape != speeds.shape:
        raise ValueError(f"head_angles: {mouth.shape[0]} mouth openings for {speeds.shape[0]} speeds")
    radius = int(math.ceil(4 * NOD_SIGMA_FRAMES))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / NOD_SIGMA_FRAMES) ** 2)
    padded = np.pad(mouth, radius, mode="edge")
    nod = np.convolve(padded, taps / taps.sum(), mode="valid")
    return (HEAD_GAIN * speeds * nod).astype(np.float32)


def eye_openness(seed: int, num_frames: int, fps: float) -> np.ndarray:
    """Eye openness per frame, float32 [F]: 1, except blinks of BLINK_SECONDS (closed at the
    middle, linear in between); the first after 0.3-2.5 s, then every 1.5-4 s."""
    rng = _rng(seed, _BLINK)
    times = (np.arange(num_frames) + 0.5) / fps
    openness = np.ones(num_frames)
    blink = rng.uniform(0.3, 2.5)
    end = num_frames / fps + BLINK_SECONDS
    while blink < end:
        closure = np.clip(1 - np.abs(times - blink) / (BLINK_SECONDS / 2), 0, 1)
        openness = np.minimum(openness, 1 - closure)
        blink += rng.uniform(1.5, 4.0)
    return openness.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Talkers
# --------------------------------------------------------------------------------------------------


@dataclass
class Talker:
    """A synthetic talking-head video and its ground truth (F frames)."""

    seed: int
    frames: np.ndarray  # uint8 [F, S, S, 3]
    audio: np.ndarray  # float32 [T], mono, at sample_rate
    sample_rate: int
    fps: float
    mouth_open: np.ndarray  # float32 [F], 0..1 (see mouth_opening)
    head_angle: np.ndarray  # float32 [F], degrees, positive = counter-clockwise on screen
    eye_open: np.ndarray  # float32 [F], 0..1
    speed: np.ndarray  # float32 [F], the requested speed per frame
    face_boxes: np.ndarray  # float32 [F, 4], (x0, y0, x1, y1) pixels: the face ellipse's bounding box
    identity: Identity = field(repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])

    def ground_truth(self) -> dict:
        """Everything but the pixels and samples, JSON-ready."""
        def values(array, digits=4):
            return [round(float(v), digits) for v in np.asarray(array).reshape(-1)]

        return {
            "format": "emo-synthetic-talker", "version": 2, "seed": self.seed,
            "fps": self.fps, "size": self.size, "num_frames": self.num_frames,
            "sample_rate": self.sample_rate, "num_samples": int(self.audio.shape[0]),
            "mouth_function": (f"clip((rms_{MOUTH_WINDOW_SECONDS * 1000:g}ms((f + 0.5) / fps) / {VOICE_LEVEL}"
                               f" - {MOUTH_SILENT}) / {MOUTH_RANGE}, 0, 1)"),
            "degrees_per_speed": DEGREES_PER_SPEED,
            "head_function": (f"{HEAD_GAIN} * speed[f] * gaussian_sigma_{NOD_SIGMA_FRAMES:g}_frames(mouth_open)[f],"
                              f" a tilt about a pivot {HEAD_PIVOT} face half-heights below the face centre"),
            "mouth_open": values(self.mouth_open), "head_angle": values(self.head_angle, 3),
            "eye_open": values(self.eye_open), "speed": values(self.speed),
            "face_boxes": [values(box, 2) for box in self.face_boxes],
            "identity": self.identity.to_dict(),
        }


def _speed_track(speed, num_frames: int) -> np.ndarray:
    if np.ndim(speed) == 0:
        value = float(speed)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"make_talker: speed must be a number >= 0 (degrees per frame), got {speed!r}")
        return np.full(num_frames, value, dtype=np.float32)
    track = np.asarray(speed, dtype=np.float32).reshape(-1)
    if track.shape[0] != num_frames:
        raise ValueError(f"make_talker: the speed track has {track.shape[0]} values for {num_frames} frames; "
                         "give one value per frame or a single number")
    if not np.all(np.isfinite(track)) or (track < 0).any():
        raise ValueError("make_talker: speeds must be finite numbers >= 0 (degrees per frame)")
    return track


def make_talker(seed: int, seconds: float, fps: float = 25.0, size: int = 64, speed=0.5,
                identity_seed: int | None = None) -> Talker:
    """Generate the talker of `seed`: `seconds` of video at `fps`, `size` x `size` pixels.

    speed: head-rotation speed, one number or one per frame (degrees per frame / DEGREES_PER_SPEED).
    identity_seed: draw the look from another seed (the voice, motion and blinks stay `seed`'s).
    The frame count is ceil(seconds x fps), as `emo.audio.frame_count` gives for the audio.
    """
    from .audio import frame_count

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"make_talker: seed must be an integer >= 0, got {seed!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"make_talker: seconds must be > 0, got {seconds!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"make_talker: fps must be > 0, got {fps!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 2:
        raise ValueError(f"make_talker: size must be an even number of pixels >= 16, got {size!r}")
    identity = make_identity(seed if identity_seed is None else identity_seed)
    audio = synthesize_voice(seed, seconds, identity.voice_f0)
    num_frames = frame_count(len(audio), SAMPLE_RATE, fps)
    speeds = _speed_track(speed, num_frames)
    mouth = mouth_opening(audio, SAMPLE_RATE, fps, num_frames)
    angles = head_angles(mouth, speeds)
    eyes = eye_openness(seed, num_frames, fps)
    frames = np.stack([render_frame(identity, size, angles[f], mouth[f], eyes[f]) for f in range(num_frames)])
    boxes = np.array([face_box(identity, size, angles[f]) for f in range(num_frames)], dtype=np.float32)
    return Talker(seed=int(seed), frames=frames, audio=audio, sample_rate=SAMPLE_RATE, fps=float(fps),
                  mouth_open=mouth, head_angle=angles, eye_open=eyes, speed=speeds, face_boxes=boxes,
                  identity=identity)


def write_talker(talker: Talker, path, crf: int = 12) -> Path:
    """Write the talker as an mp4 (H.264 + AAC) and its ground truth next to it (same name, .json).

    Returns the video's path."""
    import torch

    from .video import write_video

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"write_talker: the video path must end in .mp4, got {path.name!r}")
    video = write_video(path, torch.from_numpy(talker.frames), talker.fps,
                        audio=(torch.from_numpy(talker.audio)[None], talker.sample_rate), crf=crf,
                        metadata={"comment": f"EMO synthetic talker seed={talker.seed}"})
    sidecar = video.with_suffix(".json")
    sidecar.write_text(json.dumps(talker.ground_truth()))
    return video


def talker_name(seed: int) -> str:
    return f"talker_{seed:07d}"


def write_talker_folder(out, count: int, seconds: float, *, seed: int = 0, size: int = 64, fps: float = 25.0,
                        speed_range: tuple[float, float] = (0.0, 1.4), crf: int = 12,
                        on_video=None) -> list[Path]:
    """Write talkers seed, seed + 1, ..., seed + count - 1 into `out` as talker_<seed>.mp4 + .json.

    Each talker's speed is constant, drawn from `speed_range` (uniform, rounded to 0.001) by its own
    seed. A talker
    whose video already exists is skipped, so an interrupted run resumes."""
    if count < 1:
        raise ValueError(f"synth: count must be >= 1, got {count}")
    low, high = speed_range
    if not 0 <= low <= high:
        raise ValueError(f"synth: the speed range must satisfy 0 <= low <= high, got {speed_range}")
    if seed < EVALUATION_SEED_START <= seed + count - 1:
        logger.warning("synth: seeds %d..%d reach into the evaluation range (>= %d); evaluation will "
                       "then measure talkers that were trained on", seed, seed + count - 1, EVALUATION_SEED_START)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        current = seed + index
        path = out / f"{talker_name(current)}.mp4"
        if not (path.exists() and path.with_suffix(".json").exists()):
            speed = round(float(_rng(current, _SPEED).uniform(low, high)), 3)  # exact in the JSON
            write_talker(make_talker(current, seconds, fps=fps, size=size, speed=speed), path, crf=crf)
        paths.append(path)
        if on_video is not None:
            on_video(path)
    return paths
