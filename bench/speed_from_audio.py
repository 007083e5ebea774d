"""Speed from the audio: does the curve follow the voice's energy, and does the head follow it?

    python bench/speed_from_audio.py [--audio FILE ...] [--talkers 2] [--seconds 8]
        [--checkpoint CKPT] [--no-model] [--json outputs/speed_from_audio.json]

Part 1, the curve (`emo.speed_from_audio`, min 0.3, max 1.2, smoothing 0.5 s) against the
audio's energy, per file: the bundled sample voice, any --audio files (e.g. espeak-ng speech),
and a synthetic song (a sung tone with a 4 Hz syllable envelope, 2 s loud / 2 s 20 dB quieter).
Pearson correlation of the curve with the per-frame RMS (0.1 s window), with the same RMS
smoothed by the curve's own Gaussian, and with the level in dB; the curve's range.

Part 2, the head (default: the bundled demo model, which follows the requested speed): held-out
synthetic talkers (seeds from 1,000,500) whose voice alternates 2 s at full loudness and 2 s at
QUIET_GAIN (-10.5 dB). Each talker is generated twice from its frame 0, with the same noise:
with the audio-derived speed (min 0.2, max 1.2) and with one constant speed equal to that
curve's mean (the same total speed, spread evenly). The head angle of every frame is measured
from the pixels (`emo.evaluate.measure.register`) and the head motion (mean |angle change|,
degrees per frame) reported for the loud and the quiet passages (the first 0.3 s of each left
out), beside the ground truth: what the synthetic talkers' own rule (head angle = gain x speed x
smoothed mouth opening) gives for the same audio and speeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo import synthetic  # noqa: E402
from emo.audio import load_audio  # noqa: E402
from emo.checkpoints import DEMO_CHECKPOINT  # noqa: E402
from emo.speed_from_audio import frame_loudness_db, gaussian_smooth, speed_from_audio  # noqa: E402

FPS = 25.0
PASSAGE_SECONDS = 2.0
QUIET_GAIN = 0.3
SETTLE_SECONDS = 0.3  # left out at the start of each passage: the smoothed speed is still changing
FIRST_SEED = 1_000_500
CURVE = dict(min_speed=0.3, max_speed=1.2, smoothing=0.5)
MODEL_CURVE = dict(min_speed=0.2, max_speed=1.2, smoothing=0.5)


def song(seconds: float, rate: int = 16000) -> torch.Tensor:
    """(1, T): a sung tone with a 4 Hz envelope, loud and 20 dB quieter passages of 2 s."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 440 * t + 1.0)
    gain = np.where((t // PASSAGE_SECONDS) % 2 == 0, 1.0, 0.1)
    signal = 0.3 * gain * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * tone
    signal += 1e-3 * np.random.default_rng(0).standard_normal(t.size)
    return torch.from_numpy(signal.astype(np.float32))[None]


def passages(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the loud and the quiet frames (settled part of each passage)."""
    seconds = (np.arange(num_frames) + 0.5) / FPS
    settled = (seconds % PASSAGE_SECONDS) >= SETTLE_SECONDS
    loud = (seconds // PASSAGE_SECONDS) % 2 == 0
    return settled & loud, settled & ~loud


def curve_against_energy(name: str, waveform: torch.Tensor, rate: int) -> dict:
    frames = math.ceil(waveform.shape[-1] / rate * FPS)
    speeds = speed_from_audio(waveform, rate, FPS, frames, **CURVE).numpy().astype(np.float64)
    level_db = frame_loudness_db(waveform, rate, FPS, frames)
    rms = 10 ** (level_db / 20)
    smoothed = gaussian_smooth(rms, CURVE["smoothing"] * FPS)
    return {"audio": name, "seconds": round(waveform.shape[-1] / rate, 2), "frames": frames,
            "corr_rms": float(np.corrcoef(speeds, rms)[0, 1]),
            "corr_smoothed_rms": float(np.corrcoef(speeds, smoothed)[0, 1]),
            "corr_db": float(np.corrcoef(speeds, level_db)[0, 1]),
            "speed_min": float(speeds.min()), "speed_max": float(speeds.max()), "speed_mean": float(speeds.mean()),
            "max_step": float(np.abs(np.diff(speeds)).max())}


def loud_quiet_voice(seed: int, seconds: float) -> np.ndarray:
    """The talker's voice, alternately at full loudness and at QUIET_GAIN (50 ms cross-fades)."""
    voice = synthetic.synthesize_voice(seed, seconds, synthetic.make_identity(seed).voice_f0)
    t = np.arange(voice.size) / synthetic.SAMPLE_RATE
    gain = np.where((t // PASSAGE_SECONDS) % 2 == 0, 1.0, QUIET_GAIN)
    ramp = int(0.05 * synthetic.SAMPLE_RATE)
    gain = np.convolve(np.pad(gain, ramp, mode="edge"), np.ones(2 * ramp + 1) / (2 * ramp + 1), mode="valid")
    return (voice * gain).astype(np.float32)


def motion(angles: np.ndarray, loud: np.ndarray, quiet: np.ndarray) -> dict:
    step = np.abs(np.diff(angles, prepend=angles[0]))
    return {"loud": float(step[loud].mean()), "quiet": float(step[quiet].mean())}


def head_motion(checkpoint, talkers: int, seconds: float, say) -> list[dict]:
    from emo.evaluate import measure
    from emo.evaluate.evaluation import face_region
    from emo.faces.boxes import box_mask
    from emo.pipeline import EMOPipeline, GenerationSettings

    pipeline = EMOPipeline.from_checkpoint(checkpoint)
    size = int(pipeline.config.defaults.size)
    settings = GenerationSettings(size=size, fps=FPS, seed=0)
    rows = []
    for seed in range(FIRST_SEED, FIRST_SEED + talkers):
        talker = synthetic.make_talker(seed, seconds, FPS, size)
        audio = loud_quiet_voice(seed, seconds)
        features = pipeline.encode_audio(torch.from_numpy(audio)[None], synthetic.SAMPLE_RATE, FPS)
        frames = features.num_frames
        loud, quiet = passages(frames)
        curve = speed_from_audio(torch.from_numpy(audio), synthetic.SAMPLE_RATE, FPS, frames, **MODEL_CURVE)
        constant = float(curve.mean())
        reference = torch.from_numpy(talker.frames[0]).float() / 255.0
        mask = box_mask(face_region(talker.face_boxes[0], size), size, size)
        layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
        mouth = synthetic.mouth_opening(audio, synthetic.SAMPLE_RATE, FPS, frames)
        row = {"seed": seed, "frames": frames, "constant_speed": constant,
               "curve_loud": float(curve.numpy()[loud].mean()), "curve_quiet": float(curve.numpy()[quiet].mean())}
        for name, speed in (("from_audio", curve), ("constant", constant)):
            start = time.perf_counter()
            video = pipeline(reference, features, face_mask=mask, speed=speed, settings=settings).frames
            angles = measure.register(measure.as_uint8_frames(video), layout).angles.astype(np.float64)
            truth = synthetic.head_angles(mouth, np.broadcast_to(np.asarray(speed, dtype=np.float32), (frames,)))
            row[name] = motion(angles, loud, quiet)
            row[name + "_truth"] = motion(truth.astype(np.float64), loud, quiet)
            say(f"talker {seed} {name}: {row[name]} (truth {row[name + '_truth']}), "
                f"{time.perf_counter() - start:.0f} s")
        rows.append(row)
    return rows


def format_report(report: dict) -> list[str]:
    lines = ["| audio | s | corr. with RMS | with smoothed RMS | with dB | speed min / mean / max | max step |",
             "|---|---|---|---|---|---|---|"]
    for r in report["curves"]:
        lines.append(f"| {r['audio']} | {r['seconds']} | {r['corr_rms']:.2f} | {r['corr_smoothed_rms']:.2f} | "
                     f"{r['corr_db']:.2f} | {r['speed_min']:.2f} / {r['speed_mean']:.2f} / {r['speed_max']:.2f} | "
                     f"{r['max_step']:.3f} |")
    if report.get("heads"):
        lines += ["", "| talker | speed | mean speed loud / quiet | head motion loud / quiet (deg/frame) | "
                      "ratio | ground truth loud / quiet | ratio |", "|---|---|---|---|---|---|---|"]
        for r in report["heads"]:
            for name in ("from_audio", "constant"):
                m, t = r[name], r[name + "_truth"]
                speeds = (f"{r['curve_loud']:.2f} / {r['curve_quiet']:.2f}" if name == "from_audio"
                          else f"{r['constant_speed']:.2f} / {r['constant_speed']:.2f}")
                lines.append(f"| {r['seed']} | {name.replace('_', ' ')} | {speeds} | {m['loud']:.2f} / "
                             f"{m['quiet']:.2f} | {m['loud'] / max(m['quiet'], 1e-9):.2f} | {t['loud']:.2f} / "
                             f"{t['quiet']:.2f} | {t['loud'] / max(t['quiet'], 1e-9):.2f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", nargs="*", default=[], help="more audio files for part 1")
    parser.add_argument("--talkers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT))
    parser.add_argument("--no-model", action="store_true", help="part 1 only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sources = [("sample_voice.wav", *load_audio(DEMO_CHECKPOINT.parent / "sample_voice.wav"))]
    sources += [(Path(path).name, *load_audio(path)) for path in args.audio]
    sources.append(("synthetic song", song(args.seconds), 16000))
    report = {"curve_settings": CURVE, "curves": [curve_against_energy(*source) for source in sources]}
    if not args.no_model:
        report["model_curve_settings"] = MODEL_CURVE
        report["heads"] = head_motion(args.checkpoint, args.talkers, args.seconds,
                                      lambda message: print(message, file=sys.stderr, flush=True))
    print("\n".join(format_report(report)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
