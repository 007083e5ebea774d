"""Scheduler study: at which step counts does each sampler's quality hold?

    python bench/schedulers.py [--checkpoint CKPT] [--schedulers ddim,dpmpp_2m,unipc,euler]
        [--steps 3,5,8,10,15,20,30,40] [--reference ddim:40] [--talkers 2] [--seconds 3]
        [--json outputs/scheduler_study.json] [--device auto] [--precision fp32]

DPM-Solver++ and UniPC are multistep solvers of the same probability-flow ODE that DDIM solves
to first order, so they may reach the same picture in fewer steps; each step is one backbone
call (both guidance branches batched) for every scheduler studied here, so steps are the cost.
This script measures, instead of assuming, where each one's quality holds on a checkpoint
(default: the bundled 64-px demo model, `emo.checkpoints.DEMO_CHECKPOINT`).

It draws held-out synthetic talkers (seeds from `emo.synthetic.EVALUATION_SEED_START`) and
generates each of them exactly as `emo evaluate` does (frame 0 as the reference, its face box as
the mask, the model's default clip length and guidance, one noise seed for every run), once with
the reference sampler (default DDIM at max(40, the model's default steps)) and once per
scheduler x step count. For every run:

- fidelity to the reference run on the same noise: PSNR in dB (mean and worst over the frames;
  inf for identical frames) and the mean absolute pixel difference in 8-bit grey levels;
- task quality from the pixels, with the evaluation's own `measure_video`: lip-sync correlation
  with the talker's true mouth opening (offset 0) and identity distance to the reference frame
  (colour + silhouette, 0..1, lower is better), both averaged over the talkers;
- seconds per generated frame, end to end (audio encoding, denoising, VAE decode), and its
  ratio to the reference run in the same process: wall time on a GPU, this process's CPU time
  on a CPU (a machine busy with other jobs disturbs it far less than wall time). Absolute CPU
  seconds mean little; the ratio, and the ratio of steps, are what carry over to a GPU.

Rule "quality holds" (`HoldRule`), judged against the reference run:
  lip-sync correlation >= reference - 0.05, and identity distance <= reference x 1.10, and
  PSNR >= 35 dB (mean over the frames; --min-psnr 0 drops this condition).
The task metrics say whether the video still does its job; the PSNR floor says it is still the
reference's picture, which the two metrics alone do not see (blur, lost detail). 35 dB is a mean
error of about 3-4 grey levels, and well below the ~43 dB at which DPM-Solver++ and UniPC at 40
steps still differ from DDIM at 40 on the demo model (they converge to their own discretisation of the same ODE),
so the floor does not penalise a solver for not being DDIM.
A scheduler "holds from n steps" when n is the smallest tested step count such that it AND
every larger tested step count hold: a lucky low count followed by a failing higher one does not
count. None when even the largest tested count fails. The speed-up reported is the reference's
steps / n (denoising cost), next to the measured end-to-end ratio at n.

Deterministic samplers only give a meaningful fidelity column: ancestral ones (euler_ancestral,
ddpm) draw fresh noise at each step (which also shifts the later clips' starting noise), so their runs
do not share the reference's noise; they are flagged `stochastic`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo import synthetic  # noqa: E402
from emo.audio import frame_count  # noqa: E402
from emo.checkpoints import DEMO_CHECKPOINT  # noqa: E402
from emo.evaluate.evaluation import EvaluationOptions, TalkerGenerator, measure_video  # noqa: E402
from emo.schedulers import SCHEDULERS, make_scheduler  # noqa: E402

DEFAULT_SCHEDULERS = ("ddim", "dpmpp_2m", "unipc", "euler")
DEFAULT_STEPS = (3, 5, 8, 10, 15, 20, 30, 40)
REFERENCE_SCHEDULER = "ddim"
REFERENCE_MIN_STEPS = 40  # the paper's DDIM step count; the model's default when that is larger
STOCHASTIC = {"ddpm", "euler_ancestral"}  # draw noise at each step: no shared noise with the reference


@dataclass(frozen=True)
class HoldRule:
    """When a run's quality "holds" compared with the reference run (see the module docstring)."""

    lip_sync_tolerance: float = 0.05  # absolute drop in lip-sync correlation allowed
    identity_tolerance: float = 0.10  # relative rise in identity distance allowed
    min_psnr: float | None = 35.0  # dB against the reference; None or 0: fidelity is reported, not required

    def describe(self) -> str:
        text = (f"lip-sync correlation >= reference - {self.lip_sync_tolerance:g} and identity distance <= "
                f"reference x {1 + self.identity_tolerance:g}")
        if self.min_psnr:
            text += f" and PSNR >= {self.min_psnr:g} dB"
        return text + "; holds from n = smallest tested step count where n and every larger count hold"


@dataclass
class StudyOptions:
    schedulers: tuple[str, ...] = DEFAULT_SCHEDULERS
    steps: tuple[int, ...] = DEFAULT_STEPS
    reference: tuple[str, int] | None = None  # (scheduler, steps); None: `default_reference`
    talkers: int = 2
    seconds: float = 3.0
    first_seed: int = synthetic.EVALUATION_SEED_START
    speed: float = EvaluationOptions.speed  # head speed, as the evaluation's lip-sync runs
    seed: int = 0  # noise seed, the same for every run
    max_offset: int = EvaluationOptions.max_offset
    rule: HoldRule = field(default_factory=HoldRule)


# ---- arguments ----------------------------------------------------------------------------------
def parse_names(text: str) -> tuple[str, ...]:
    """'ddim, unipc' -> ('ddim', 'unipc'); every name must be a known scheduler."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("give at least one scheduler name")
    check_scheduler_names(names)
    return names


def parse_steps(text: str) -> tuple[int, ...]:
    """'5,10,20' -> (5, 10, 20), sorted, each a whole number >= 1."""
    try:
        steps = sorted({int(value) for value in text.split(",") if value.strip()})
    except ValueError:
        raise ValueError(f"steps must be whole numbers separated by commas, got {text!r}") from None
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be >= 1, got {text!r}")
    return tuple(steps)


def parse_reference(text: str) -> tuple[str, int]:
    """'ddim:40' -> ('ddim', 40)."""
    name, _, steps = text.partition(":")
    if not steps.strip().isdigit():
        raise ValueError(f"--reference is SCHEDULER:STEPS (e.g. ddim:40), got {text!r}")
    (count,) = parse_steps(steps)
    check_scheduler_names([name])
    return name, count


def check_scheduler_names(names) -> None:
    """Fail before any generation (a wrong name would otherwise surface after the reference run)."""
    unknown = [name for name in names if name not in SCHEDULERS]
    if unknown:
        raise ValueError(f"unknown scheduler(s) {', '.join(map(repr, unknown))}; choose from {', '.join(sorted(SCHEDULERS))}")


def default_reference(pipeline) -> tuple[str, int]:
    """DDIM at 40 steps, or at the model's default steps when it was made for more."""
    return REFERENCE_SCHEDULER, max(REFERENCE_MIN_STEPS, int(pipeline.config.defaults.steps))


# ---- measurements -------------------------------------------------------------------------------
def fidelity(frames: np.ndarray, reference: np.ndarray) -> dict:
    """How close uint8 frames [F, H, W, 3] are to the reference run's: per-frame PSNR (dB, peak
    255; inf where a frame is identical) averaged and its worst frame, and the mean absolute
    difference in grey levels. The worst frame is kept because one bad frame shows in a video
    even when the mean is fine."""
    if frames.shape != reference.shape:
        raise ValueError(f"fidelity: frames {frames.shape} and reference {reference.shape} differ in shape")
    difference = frames.astype(np.float64) - reference.astype(np.float64)
    mse = (difference ** 2).reshape(len(frames), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-300)), np.inf)
    return {"psnr": float(psnr.mean()), "psnr_min": float(psnr.min()),
            "mean_abs_diff": float(np.abs(difference).mean())}


def task_quality(frames: np.ndarray, talker: synthetic.Talker, frames_per_clip: int, max_offset: int) -> dict:
    """Lip sync and identity of one generated video, measured by the project's evaluation code."""
    measured = measure_video(frames, talker.frames[0], talker.face_boxes[0], talker.mouth_open,
                             frames_per_clip, max_offset)
    return {"lip_sync_correlation": float(measured.lip_sync.correlation),
            "identity_distance": float(measured.identity.combined),
            "seam_ratio": float(measured.seams.ratio), "head_motion": float(measured.head_motion)}


def check_talker_length(seconds: float, fps: float, frames_per_clip: int, max_offset: int) -> None:
    """measure_video needs a clip seam and room for the lip-sync offsets."""
    frames = frame_count(int(round(seconds * synthetic.SAMPLE_RATE)), synthetic.SAMPLE_RATE, fps)
    needed = max(frames_per_clip + 1, 2 * max_offset + 3)
    if frames < needed:
        raise ValueError(f"{seconds:g} s is {frames} frames; the measurements need at least {needed} "
                         f"(more than one clip of {frames_per_clip}, lip-sync offsets of +-{max_offset}): "
                         f"give --seconds >= {needed / fps:g}")


# ---- generation ---------------------------------------------------------------------------------
class Runner:
    """Generates talkers with one scheduler and step count, timed. It reuses the evaluation's
    generator so that the study generates exactly what `emo evaluate` would (reference frame,
    face mask, speed, clip settings), only the sampler changes."""

    def __init__(self, pipeline, options: StudyOptions):
        self.pipeline, self.options = pipeline, options
        defaults = pipeline.config.defaults
        self.size, self.fps = int(defaults.size), float(defaults.fps)

    def generator(self, scheduler: str, steps: int) -> TalkerGenerator:
        generate = TalkerGenerator(self.pipeline, EvaluationOptions(steps=steps, seed=self.options.seed),
                                   self.size, self.fps)
        generate.settings = replace(generate.settings, scheduler=scheduler)
        return generate

    def __call__(self, talker: synthetic.Talker, scheduler: str, steps: int) -> tuple[np.ndarray, float]:
        """(uint8 frames, seconds per frame)."""
        generate = self.generator(scheduler, steps)
        clock = time.perf_counter if self.pipeline.device.type == "cuda" else time.process_time
        start = clock()
        frames = generate(talker, self.options.speed)  # numpy frames: the GPU has finished
        return frames, (clock() - start) / len(frames)


def run_study(pipeline, options: StudyOptions | None = None,
              progress: Callable[[str], None] | None = None) -> dict:
    """Generate and measure every talker with the reference sampler and with every scheduler x
    step count; returns the report (JSON-ready; see `format_table`)."""
    options = options or StudyOptions()
    say = progress or (lambda message: None)
    reference_name, reference_steps = options.reference or default_reference(pipeline)
    check_scheduler_names([reference_name, *options.schedulers])
    for name in {reference_name, *options.schedulers}:
        make_scheduler(name, pipeline.config.scheduler)  # a config the scheduler rejects fails here
    if options.talkers < 1:
        raise ValueError(f"talkers must be >= 1, got {options.talkers}")
    run = Runner(pipeline, options)
    frames_per_clip = run.generator(reference_name, reference_steps).frames_per_clip
    check_talker_length(options.seconds, run.fps, frames_per_clip, options.max_offset)
    talkers = [synthetic.make_talker(options.first_seed + i, options.seconds, fps=run.fps, size=run.size,
                                     speed=options.speed) for i in range(options.talkers)]

    say("warm-up (1 step, not measured)")
    run(talkers[0], reference_name, 1)
    references, reference_seconds, reference_quality = [], [], []
    for index, talker in enumerate(talkers):
        say(f"reference {reference_name}:{reference_steps}, talker {index + 1}/{len(talkers)}")
        frames, seconds = run(talker, reference_name, reference_steps)
        references.append(frames)
        reference_seconds.append(seconds)
        reference_quality.append(task_quality(frames, talker, frames_per_clip, options.max_offset))
    reference_row = {"scheduler": reference_name, "steps": reference_steps,
                     **mean_of(reference_quality), "seconds_per_frame": float(np.mean(reference_seconds)),
                     "talkers": reference_quality}

    rows = []
    for name in options.schedulers:
        for steps in options.steps:
            say(f"{name}:{steps}")
            per_talker, seconds = [], []
            for talker, reference in zip(talkers, references):
                frames, spf = run(talker, name, steps)
                per_talker.append({**fidelity(frames, reference),
                                   **task_quality(frames, talker, frames_per_clip, options.max_offset)})
                seconds.append(spf)
            row = {"scheduler": name, "steps": steps, "stochastic": name in STOCHASTIC, **mean_of(per_talker),
                   "psnr_min": float(min(t["psnr_min"] for t in per_talker)),
                   "seconds_per_frame": float(np.mean(seconds)),
                   "step_speedup": reference_steps / steps,
                   "measured_speedup": reference_row["seconds_per_frame"] / float(np.mean(seconds)),
                   "talkers": per_talker}
            row["holds"] = holds(row, reference_row, options.rule)
            rows.append(row)

    defaults = run.generator(reference_name, reference_steps).resolved
    return {
        "format": "emo-scheduler-study", "version": 1,
        "model": pipeline.config.name, "device": str(pipeline.device),
        "precision": str(pipeline.dtype).replace("torch.", ""),
        "settings": {"talkers": options.talkers, "seconds": options.seconds, "first_seed": options.first_seed,
                     "speed": options.speed, "noise_seed": options.seed, "max_offset": options.max_offset,
                     **{k: v for k, v in defaults.items() if k != "steps"}},
        "seeds": [t.seed for t in talkers],
        "rule": {**asdict(options.rule), "description": options.rule.describe()},
        "reference": reference_row,
        "rows": rows,
        "summary": summarize(rows, reference_row, options.rule),
    }


def mean_of(per_talker: list[dict]) -> dict:
    """Mean over the talkers of every number they share (an inf PSNR stays inf)."""
    return {key: float(np.mean([t[key] for t in per_talker])) for key in per_talker[0]}


# ---- the "quality holds" rule -------------------------------------------------------------------
def holds(row: dict, reference: dict, rule: HoldRule) -> bool:
    """Does this run keep the reference run's quality? NaN measurements never hold."""
    lip, identity = row["lip_sync_correlation"], row["identity_distance"]
    if any(math.isnan(value) for value in (lip, identity, reference["lip_sync_correlation"],
                                             reference["identity_distance"])):
        return False
    ok = (lip >= reference["lip_sync_correlation"] - rule.lip_sync_tolerance
          and identity <= reference["identity_distance"] * (1 + rule.identity_tolerance))
    if rule.min_psnr:
        ok = ok and row["psnr"] >= rule.min_psnr
    return bool(ok)


def smallest_holding_steps(rows: list[dict], reference: dict, rule: HoldRule) -> int | None:
    """The smallest step count n such that the runs at n and at every larger tested count hold,
    or None when the largest tested count does not hold. `rows`: one scheduler's runs."""
    found = None
    for row in sorted(rows, key=lambda r: r["steps"], reverse=True):
        if not holds(row, reference, rule):
            break
        found = row["steps"]
    return found


def summarize(rows: list[dict], reference: dict, rule: HoldRule) -> dict:
    """Per scheduler: where quality holds, and the speed-up there."""
    summary = {}
    for name in dict.fromkeys(row["scheduler"] for row in rows):
        mine = [row for row in rows if row["scheduler"] == name]
        steps = smallest_holding_steps(mine, reference, rule)
        at = next((row for row in mine if row["steps"] == steps), None)
        summary[name] = {"holds_from_steps": steps,
                         "step_speedup": at["step_speedup"] if at else None,
                         "measured_speedup": at["measured_speedup"] if at else None}
    return summary


# ---- output -------------------------------------------------------------------------------------
def _number(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(report: dict) -> list[str]:
    """The report as text: the reference, one row per scheduler x steps, then the summary."""
    ref = report["reference"]
    lines = [f"scheduler study: model={report['model']} device={report['device']} precision={report['precision']} "
             f"talkers={report['settings']['talkers']} x {report['settings']['seconds']:g} s",
             f"reference {ref['scheduler']}:{ref['steps']}: lip-sync {ref['lip_sync_correlation']:.3f}, "
             f"identity {ref['identity_distance']:.3f}, {ref['seconds_per_frame']:.3f} s/frame",
             f"rule: {report['rule']['description']}", ""]
    header = ("scheduler", "steps", "PSNR dB", "worst dB", "|diff|", "lip-sync", "identity", "s/frame",
              "step x", "measured x", "holds")
    table = [header]
    for row in report["rows"]:
        table.append((row["scheduler"] + (" (stochastic)" if row["stochastic"] else ""), str(row["steps"]),
                      _number(row["psnr"], 1), _number(row["psnr_min"], 1), _number(row["mean_abs_diff"], 2),
                      _number(row["lip_sync_correlation"]), _number(row["identity_distance"]),
                      _number(row["seconds_per_frame"]), f"{row['step_speedup']:.2f}",
                      f"{row['measured_speedup']:.2f}", "yes" if row["holds"] else "no"))
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    for index, cells in enumerate(table):
        lines.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                               enumerate(zip(cells, widths))).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for name, entry in report["summary"].items():
        if entry["holds_from_steps"] is None:
            lines.append(f"{name}: quality does not hold at any tested step count")
        else:
            lines.append(f"{name}: holds from {entry['holds_from_steps']} steps: {entry['step_speedup']:.2f}x fewer "
                         f"steps than {ref['scheduler']}:{ref['steps']}, {entry['measured_speedup']:.2f}x measured")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="default: the bundled demo model")
    parser.add_argument("--schedulers", default=",".join(DEFAULT_SCHEDULERS),
                        help=f"comma-separated, from: {', '.join(sorted(SCHEDULERS))}")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="comma-separated step counts")
    parser.add_argument("--reference", default=None,
                        help=f"SCHEDULER:STEPS (default {REFERENCE_SCHEDULER}:max({REFERENCE_MIN_STEPS}, "
                             "the model's default steps))")
    parser.add_argument("--talkers", type=int, default=StudyOptions.talkers, help="held-out synthetic talkers")
    parser.add_argument("--seconds", type=float, default=StudyOptions.seconds, help="per talker")
    parser.add_argument("--seed", type=int, default=0, help="noise seed, the same for every run")
    parser.add_argument("--lip-sync-tolerance", type=float, default=HoldRule.lip_sync_tolerance)
    parser.add_argument("--identity-tolerance", type=float, default=HoldRule.identity_tolerance)
    parser.add_argument("--min-psnr", type=float, default=HoldRule.min_psnr,
                        help="PSNR (dB) against the reference needed to hold; 0: do not require one")
    parser.add_argument("--json", default="outputs/scheduler_study.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    args = parser.parse_args(argv)

    from emo.pipeline import EMOPipeline

    try:
        options = StudyOptions(schedulers=parse_names(args.schedulers), steps=parse_steps(args.steps),
                               reference=parse_reference(args.reference) if args.reference else None,
                               talkers=args.talkers, seconds=args.seconds, seed=args.seed,
                               rule=HoldRule(args.lip_sync_tolerance, args.identity_tolerance, args.min_psnr))
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        pipeline = EMOPipeline.from_checkpoint(args.checkpoint, device=device, dtype=args.precision)
        report = run_study(pipeline, options, progress=lambda message: print(message, file=sys.stderr, flush=True))
    except ValueError as error:  # CheckpointError is one too
        parser.error(str(error))
    report["checkpoint"] = str(args.checkpoint)
    print("\n".join(format_table(report)))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
