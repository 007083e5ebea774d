"""`emo evaluate`: generate held-out synthetic talkers with a checkpoint and measure them.

Steps:
1. draw the held-out talkers (seeds >= `emo.synthetic.EVALUATION_SEED_START`, never trained on)
   at the model's size and frame rate;
2. for each, run the EMO pipeline with frame 0 as the reference, its audio, its face box (grown
   by 20 %, as the pipeline does for a detected face) as the face mask, and a speed;
3. for the first talker, also run it at every speed of `speeds`, and once more at the fastest
   for one clip that continues the talker's own first n frames (given as the motion frames);
4. measure the generated videos and, with the very same code, the ground-truth videos
   (`measure_video`), then compare with the targets.

The ground-truth column shows what a perfect model would score with these measurements: it
validates the metrics themselves (lip sync ~1 at offset 0, seams ~1, identity ~0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import synthetic
from ..audio import AudioFeatures, frame_count
from ..faces.boxes import box_mask, expand_box
from . import measure, metrics

logger = logging.getLogger(__name__)

FACE_MASK_EXPANSION = 0.2  # as emo.faces.region.face_region_mask's default

# name -> (comparison, threshold, description)
TARGETS: dict[str, tuple[str, float, str]] = {
    "lip_sync_correlation": (">=", 0.8, "corr(measured mouth opening, true opening) at offset 0, mean over talkers"),
    "lip_sync_offset": ("==", 0, "frames; the offset of the best mean correlation (> 0: video lags audio)"),
    "identity_ratio": ("<=", 0.5, "identity distance to the reference / distance between different identities"),
    "speed_spearman": ("==", 1.0, "rank correlation of measured head motion with the requested speed"),
    "speed_gain": (">=", 0.5, "slope of measured head motion (deg/frame) on the requested speed; truth ~1"),
    "seam_ratio": ("<=", 1.5, "frame change at clip seams / frame change around them"),
}


@dataclass
class EvaluationOptions:
    count: int = 4  # held-out talkers
    seconds: float = 3.0  # per talker
    first_seed: int = synthetic.EVALUATION_SEED_START
    speed: float = 0.7  # head speed of the lip-sync / identity runs
    speeds: tuple[float, ...] = (0.2, 0.7, 1.2)  # speed-control runs (first talker)
    steps: int | None = None  # None: the model's defaults
    guidance_scale: float | None = None
    frames_per_clip: int | None = None
    motion_frames: int | None = None
    overlap_frames: int | None = None  # None: the model's (see GenerationSettings.overlap_frames)
    seed: int = 0  # noise seed of the generations
    max_offset: int = 5  # lip-sync offsets searched, +- frames
    distractors: int = 8  # other identities the reference is compared with
    fid_weights: str | None = None
    fvd_weights: str | None = None

    def check(self) -> None:
        checks = [
            (self.count >= 1, f"count must be >= 1, got {self.count}"),
            (self.seconds > 0, f"seconds must be > 0, got {self.seconds}"),
            (len(self.speeds) >= 2, f"give at least 2 speeds for speed control, got {list(self.speeds)}"),
            (all(s >= 0 for s in self.speeds) and self.speed >= 0, "speeds must be >= 0"),
            (self.max_offset >= 0, f"max_offset must be >= 0, got {self.max_offset}"),
            (self.distractors >= 1, f"distractors must be >= 1, got {self.distractors}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"evaluate: {message}")
        if self.first_seed < synthetic.EVALUATION_SEED_START:
            logger.warning("evaluate: seed %d is in the training range (< %d); the talkers may have been trained on",
                           self.first_seed, synthetic.EVALUATION_SEED_START)


@dataclass
class VideoMeasurement:
    """What `measure_video` finds in one video (generated or ground truth)."""

    mouth: np.ndarray = field(repr=False)  # [F] measured mouth opening
    angles: np.ndarray = field(repr=False)  # [F] degrees relative to the reference
    lip_sync: metrics.LipSync
    head_motion: float  # degrees per frame
    identity: metrics.IdentityDistance
    seams: metrics.SeamStability
    registration_failures: int


def face_region(face_box, size: int) -> tuple[int, int, int, int]:
    """The reference's face box grown as the pipeline's face mask is (pixels)."""
    box = tuple(int(round(v)) for v in face_box)
    return expand_box(box, FACE_MASK_EXPANSION, size, size)


def seam_exclusion(layout: measure.ReferenceLayout) -> tuple[int, int, int, int]:
    """The mouth region grown by a third on each side (room for the head's tilt): left out of the
    seam measurement (see `metrics.seam_stability`)."""
    x0, y0, x1, y1 = layout.mouth_region
    gx, gy = (x1 - x0) // 3, (y1 - y0) // 3
    return (x0 - gx, y0 - gy, x1 + gx, y1 + gy)


def measure_video(frames, reference, face_box, mouth_truth, frames_per_clip: int,
                  max_offset: int = 5) -> VideoMeasurement:
    """Measure a video [F, S, S, 3] made from `reference` [S, S, 3] (its face box in pixels)
    against the true mouth opening [F] (`emo.synthetic.mouth_opening` of its audio)."""
    frames = measure.as_uint8_frames(frames, "measure_video")
    reference = measure.as_uint8_frames(reference, "measure_video")[0]
    layout = measure.ReferenceLayout.from_reference(reference, face_box)
    registration = measure.register(frames, layout)
    aligned = measure.align_to_reference(frames, registration.warps)
    mouth = measure.mouth_darkness(aligned, layout)
    return VideoMeasurement(
        mouth=mouth, angles=registration.angles,
        lip_sync=metrics.lip_sync(mouth, mouth_truth, max_offset),
        head_motion=metrics.head_motion(registration.angles),
        identity=metrics.identity_distance(aligned, reference, face_region(face_box, reference.shape[0])),
        seams=metrics.seam_stability(frames, frames_per_clip, exclude=seam_exclusion(layout)),
        registration_failures=registration.failures,
    )


def _passed(name: str, value) -> bool:
    comparison, threshold, _ = TARGETS[name]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return {">=": value >= threshold, "<=": value <= threshold, "==": value == threshold}[comparison]


def _mean_curve(measurements: list[VideoMeasurement]) -> dict[int, float]:
    offsets = measurements[0].lip_sync.by_offset
    return {k: float(np.mean([m.lip_sync.by_offset[k] for m in measurements])) for k in offsets}


def _seam_ratio(measurements: list[VideoMeasurement]) -> float:
    seam = sum(m.seams.seam_difference * m.seams.seams for m in measurements)
    around = sum(m.seams.around_difference * m.seams.seams for m in measurements)
    return seam / around if around > 1e-12 else (1.0 if seam < 1e-12 else float("inf"))


class TalkerGenerator:
    """Runs the pipeline on talkers, caching by (seed, speed)."""

    def __init__(self, pipeline, options: EvaluationOptions, size: int, fps: float):
        from ..pipeline import GenerationSettings

        self.pipeline, self.size, self.fps = pipeline, size, fps
        self.settings = GenerationSettings(size=size, fps=fps, steps=options.steps,
                                           guidance_scale=options.guidance_scale, seed=options.seed,
                                           frames_per_clip=options.frames_per_clip,
                                           motion_frames=options.motion_frames,
                                           overlap_frames=options.overlap_frames)
        resolved = self.settings.resolve(pipeline.config.defaults)
        self.frames_per_clip = resolved.frames_per_clip
        self.resolved = {name: getattr(resolved, name) for name in
                         ("size", "fps", "frames_per_clip", "motion_frames", "steps", "guidance_scale",
                          "overlap_frames")}
        self.cache: dict[tuple[int, float], np.ndarray] = {}

    def _inputs(self, talker: synthetic.Talker):
        """The talker's frame 0 as the reference, its face-region mask and its audio features."""
        reference = torch.from_numpy(talker.frames[0]).float() / 255.0
        mask = box_mask(face_region(talker.face_boxes[0], self.size), self.size, self.size)
        features = self.pipeline.encode_audio(torch.from_numpy(talker.audio)[None], talker.sample_rate, self.fps)
        return reference, mask, features

    def __call__(self, talker: synthetic.Talker, speed: float) -> np.ndarray:
        key = (talker.seed, float(speed))
        if key not in self.cache:
            reference, mask, features = self._inputs(talker)
            result = self.pipeline(reference, features, face_mask=mask, speed=float(speed), settings=self.settings)
            self.cache[key] = measure.as_uint8_frames(result.frames)
        return self.cache[key]

    def continuation(self, talker: synthetic.Talker, speed: float) -> np.ndarray:
        """One clip (frames n .. n+f-1) generated after the talker's own frames 0 .. n-1 as the
        motion frames: uint8 [f, S, S, 3]."""
        n, f = self.resolved["motion_frames"], self.frames_per_clip
        reference, mask, full = self._inputs(talker)
        audio = AudioFeatures(features=full.features[n:n + f], fps=full.fps, waveform=full.waveform,
                              sample_rate=full.sample_rate)
        motion = torch.from_numpy(talker.frames[:n]).float() / 255.0
        result = self.pipeline(reference, audio, face_mask=mask, speed=float(speed), settings=self.settings,
                               motion_images=motion)
        return measure.as_uint8_frames(result.frames)


def motion_continuation(generate: TalkerGenerator, talker: synthetic.Talker, speed: float) -> dict | None:
    """How well one clip continues a turning head shown in its motion frames: the mean head-angle
    error (degrees) against the truth, beside two baselines a model reaches without following
    the motion: holding the last motion frame's pose, and staying at the reference's pose. None
    for a model run without motion frames."""
    n, f = generate.resolved["motion_frames"], generate.frames_per_clip
    if n == 0 or len(talker.frames) < n + f:
        return None
    layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
    truth = measure.register(talker.frames[:n + f], layout).angles.astype(np.float64)
    generated = measure.register(generate.continuation(talker, speed), layout).angles.astype(np.float64)
    goal = truth[n:n + f]
    return {"speed": float(speed), "frames": [n, n + f],
            "angle_error": float(np.abs(generated - goal).mean()),
            "hold_last_error": float(np.abs(truth[n - 1] - goal).mean()),
            "stay_at_reference_error": float(np.abs(goal).mean()),
            "angles": [round(float(a), 2) for a in generated],
            "angles_ground_truth": [round(float(a), 2) for a in goal]}


def evaluate_pipeline(pipeline, options: EvaluationOptions | None = None,
                      progress: Callable[[str], None] | None = None) -> dict:
    """Run the evaluation with an `EMOPipeline`; returns the report (JSON-ready dict, see
    `format_table`)."""
    options = options or EvaluationOptions()
    options.check()
    defaults = pipeline.config.defaults
    size, fps = int(defaults.size), float(defaults.fps)
    generate = TalkerGenerator(pipeline, options, size, fps)
    f = generate.frames_per_clip
    num_frames = frame_count(int(round(options.seconds * synthetic.SAMPLE_RATE)), synthetic.SAMPLE_RATE, fps)
    if num_frames <= f:
        raise ValueError(f"evaluate: {options.seconds} s is {num_frames} frames, not more than one clip of {f}; "
                         f"give --seconds above {f / fps:g} so clip seams can be measured")
    if num_frames < 2 * options.max_offset + 3:
        raise ValueError(f"evaluate: {num_frames} frames are too few for lip-sync offsets of +-{options.max_offset}")
    if options.fvd_weights:
        from .frechet import FVD_CLIP_FRAMES

        clips = options.count * (num_frames // FVD_CLIP_FRAMES)
        if clips < 2:
            raise ValueError(f"evaluate: FVD needs at least 2 clips of {FVD_CLIP_FRAMES} frames, and {options.count} "
                             f"talker(s) of {num_frames} frames give {clips}; raise --count or --seconds")
    say = progress or (lambda message: None)
    networks = _frechet_networks(options, pipeline.device)  # load first: a wrong file fails before the work

    seeds = [options.first_seed + i for i in range(options.count)]
    distractor_seeds = [options.first_seed + options.count + j for j in range(options.distractors)]
    distractors = [synthetic.render_frame(synthetic.make_identity(s), size) for s in distractor_seeds]

    generated, truth, per_talker = [], [], []
    generated_frames, real_frames = [], []
    for index, seed in enumerate(seeds):
        talker = synthetic.make_talker(seed, options.seconds, fps=fps, size=size, speed=options.speed)
        say(f"talker {index + 1}/{len(seeds)} (seed {seed})")
        frames = generate(talker, options.speed)
        box = talker.face_boxes[0]
        gen = measure_video(frames, talker.frames[0], box, talker.mouth_open, f, options.max_offset)
        gt = measure_video(talker.frames, talker.frames[0], box, talker.mouth_open, f, options.max_offset)
        region = face_region(box, size)
        other = float(np.mean([metrics.identity_distance(d, talker.frames[0], region).combined for d in distractors]))
        generated.append(gen)
        truth.append(gt)
        generated_frames.append(frames)
        real_frames.append(talker.frames)
        per_talker.append({
            "seed": seed,
            "lip_sync_correlation": gen.lip_sync.correlation, "lip_sync_best_offset": gen.lip_sync.best_offset,
            "identity_colour": gen.identity.colour, "identity_shape": gen.identity.shape,
            "identity_distance": gen.identity.combined, "other_identity_distance": other,
            "head_motion": gen.head_motion, "head_angle_correlation": metrics.pearson(gen.angles, talker.head_angle),
            "seam_ratio": gen.seams.ratio, "registration_failures": gen.registration_failures,
            "ground_truth": {"lip_sync_correlation": gt.lip_sync.correlation,
                             "identity_distance": gt.identity.combined, "head_motion": gt.head_motion,
                             "head_angle_correlation": metrics.pearson(gt.angles, talker.head_angle),
                             "seam_ratio": gt.seams.ratio},
        })

    # Speed control: the first talker at every speed.
    first = seeds[0]
    motion, motion_truth = [], []
    for speed in options.speeds:
        say(f"speed {speed:g} (seed {first})")
        talker = synthetic.make_talker(first, options.seconds, fps=fps, size=size, speed=speed)
        layout = measure.ReferenceLayout.from_reference(talker.frames[0], talker.face_boxes[0])
        motion.append(metrics.head_motion(measure.register(generate(talker, speed), layout).angles))
        motion_truth.append(metrics.head_motion(measure.register(talker.frames, layout).angles))
    control = metrics.speed_control(options.speeds, motion)
    control_truth = metrics.speed_control(options.speeds, motion_truth)
    fastest = max(options.speeds)
    say(f"motion continuation at speed {fastest:g} (seed {first})")
    continuation = motion_continuation(
        generate, synthetic.make_talker(first, options.seconds, fps=fps, size=size, speed=fastest), fastest)

    other_mean = float(np.mean([t["other_identity_distance"] for t in per_talker]))
    curve, curve_truth = _mean_curve(generated), _mean_curve(truth)
    values = {
        "lip_sync_correlation": (float(np.mean([m.lip_sync.correlation for m in generated])),
                                 float(np.mean([m.lip_sync.correlation for m in truth]))),
        "lip_sync_offset": (metrics.best_offset(curve), metrics.best_offset(curve_truth)),
        "identity_ratio": (float(np.mean([m.identity.combined for m in generated])) / other_mean,
                           float(np.mean([m.identity.combined for m in truth])) / other_mean),
        "speed_spearman": (control.spearman, control_truth.spearman),
        "speed_gain": (control.gain, control_truth.gain),
        "seam_ratio": (_seam_ratio(generated), _seam_ratio(truth)),
    }
    report_metrics = {}
    for name, (value, gt_value) in values.items():
        comparison, threshold, description = TARGETS[name]
        report_metrics[name] = {"value": value, "ground_truth": gt_value, "target": f"{comparison} {threshold:g}",
                                "passed": _passed(name, value), "description": description}
    report = {
        "format": "emo-evaluation", "version": 1,
        "model": pipeline.config.name,
        "settings": {**{k: v for k, v in asdict(options).items() if k not in ("fid_weights", "fvd_weights")},
                     **generate.resolved},
        "seeds": seeds, "distractor_seeds": distractor_seeds,
        "metrics": report_metrics,
        "details": {
            "lip_sync_by_offset": {str(k): v for k, v in curve.items()},
            "lip_sync_by_offset_ground_truth": {str(k): v for k, v in curve_truth.items()},
            # Does the generated head nod with the voice as the talker's does? (pearson: 0 for a still head)
            "head_angle_correlation": float(np.mean([t["head_angle_correlation"] for t in per_talker])),
            "head_angle_correlation_ground_truth": float(np.mean(
                [t["ground_truth"]["head_angle_correlation"] for t in per_talker])),
            "identity_colour": float(np.mean([m.identity.colour for m in generated])),
            "identity_shape": float(np.mean([m.identity.shape for m in generated])),
            "identity_distance": float(np.mean([m.identity.combined for m in generated])),
            "identity_distance_ground_truth": float(np.mean([m.identity.combined for m in truth])),
            "other_identity_distance": other_mean,
            "speed_control": {"speeds": list(options.speeds), "motion": motion, "motion_ground_truth": motion_truth,
                              "increasing": control.increasing},
            "motion_continuation": continuation,
            "seams": {"seam_difference": float(np.mean([m.seams.seam_difference for m in generated])),
                      "around_difference": float(np.mean([m.seams.around_difference for m in generated])),
                      "inside_difference": float(np.mean([m.seams.inside_difference for m in generated]))},
        },
        "talkers": per_talker,
    }
    if networks:
        report["frechet"] = _frechet(networks, generated_frames, real_frames, say)
    report["passed"] = all(m["passed"] for m in report_metrics.values())
    return report


def _frechet_networks(options: EvaluationOptions, device) -> dict:
    from . import frechet

    networks = {}
    if options.fid_weights:
        networks["fid"] = frechet.InceptionFeatures(options.fid_weights, device=device)
    if options.fvd_weights:
        networks["fvd"] = frechet.I3DFeatures(options.fvd_weights, device=device)
    return networks


def _frechet(networks: dict, generated: list[np.ndarray], real: list[np.ndarray], say) -> dict:
    """FID over all frames, FVD over 16-frame clips, generated vs ground truth of the same talkers."""
    from . import frechet

    out = {}
    if "fid" in networks:
        say("FID")
        out["fid"] = frechet.fid(np.concatenate(generated), np.concatenate(real), networks["fid"])
        out["fid_samples"] = int(sum(len(v) for v in generated))
    if "fvd" in networks:
        say("FVD")
        out["fvd"] = frechet.fvd(generated, real, networks["fvd"])
        out["fvd_samples"] = int(len(frechet.video_clips(generated)))
    return out


def evaluate_checkpoint(checkpoint, options: EvaluationOptions | None = None, *, device="cpu", dtype=None,
                        progress: Callable[[str], None] | None = None) -> dict:
    """Load a checkpoint and evaluate it (see `evaluate_pipeline`)."""
    from ..pipeline import EMOPipeline

    pipeline = EMOPipeline.from_checkpoint(checkpoint, device=device, dtype=dtype)
    report = evaluate_pipeline(pipeline, options, progress)
    report["checkpoint"] = str(checkpoint)
    return report


def _format(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def format_table(report: dict) -> list[str]:
    """The report as a text table: metric | generated | ground truth | target | pass."""
    rows = [("metric", "generated", "ground truth", "target", "pass")]
    for name, entry in report["metrics"].items():
        rows.append((name, _format(entry["value"]), _format(entry["ground_truth"]), entry["target"],
                     "PASS" if entry["passed"] else "FAIL"))
    details = report["details"]
    speed = details["speed_control"]
    rows.append(("head motion (deg/frame)", " ".join(_format(m) for m in speed["motion"]),
                 " ".join(_format(m) for m in speed["motion_ground_truth"]),
                 "speeds " + " ".join(f"{s:g}" for s in speed["speeds"]), ""))
    rows.append(("head angle correlation (nods)", _format(details["head_angle_correlation"]),
                 _format(details["head_angle_correlation_ground_truth"]), "vs the true angle per frame", ""))
    continuation = details.get("motion_continuation")
    if continuation:
        rows.append(("motion continuation error (deg)", _format(continuation["angle_error"]), "",
                     f"hold last pose {continuation['hold_last_error']:.3f}, stay at reference "
                     f"{continuation['stay_at_reference_error']:.3f}", ""))
    rows.append(("identity colour / shape", f"{details['identity_colour']:.3f} / {details['identity_shape']:.3f}",
                 "", f"other identities {details['other_identity_distance']:.3f}", ""))
    for key in ("fid", "fvd"):
        if key in report.get("frechet", {}):
            rows.append((key.upper(), _format(report["frechet"][key]), "", f"{report['frechet'][key + '_samples']} samples", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"overall: {'PASS' if report['passed'] else 'FAIL'}")
    return lines
