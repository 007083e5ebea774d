"""`python -m emo synth` (synthetic talker videos) and `python -m emo evaluate` (quality metrics).

Registered in emo/cli.py's COMMAND_MODULES; heavy imports happen only when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..runtime.options import COUNT, FPS, GUIDANCE, SECONDS, SEED, SPEED, STEPS, OptionValue
from ..runtime.output import atomic_output


def _speeds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as error:
        raise ValueError(f"--speeds must be comma-separated numbers such as 0.2,0.7,1.2, got {text!r}") from error
    return values


def cmd_synth(args) -> None:
    from tqdm import tqdm

    from ..synthetic import write_talker_folder

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    if args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    if args.size < 16 or args.size % 2:
        raise ValueError(f"--size must be an even number of pixels >= 16, got {args.size}")
    low, high = args.speed_range
    if low > high:
        raise ValueError(f"--speed-range {low:g} {high:g}: give LOW <= HIGH")
    with tqdm(total=args.count, unit="video", desc="synth", disable=args.quiet) as bar:
        paths = write_talker_folder(args.out, args.count, args.seconds, seed=args.seed, size=args.size,
                                    fps=args.fps, speed_range=tuple(args.speed_range),
                                    on_video=lambda path: bar.update(1))
    print(f"wrote {len(paths)} talkers to {args.out} (seeds {args.seed}..{args.seed + args.count - 1}, "
          f"{args.size}x{args.size} px, {args.seconds:g} s at {args.fps:g} fps; ground truth in the .json files)")


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(data, indent=2))


def cmd_evaluate(args) -> None:
    from ..runtime.devices import pick_device, pick_dtype
    from .evaluation import EvaluationOptions, evaluate_checkpoint, format_table

    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint: no file at '{args.checkpoint}'")
    for flag, value in (("--fid-weights", args.fid_weights), ("--fvd-weights", args.fvd_weights)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{flag}: no file at '{value}'; this library never downloads weights, "
                                    "give the path of the file you have")
    options = EvaluationOptions(count=args.count, seconds=args.seconds, first_seed=args.first_seed,
                                speed=args.speed, speeds=_speeds(args.speeds), steps=args.steps,
                                guidance_scale=args.guidance, seed=args.seed, fid_weights=args.fid_weights,
                                fvd_weights=args.fvd_weights, overlap_frames=args.overlap_frames)
    device = pick_device(args.device)
    report = evaluate_checkpoint(args.checkpoint, options, device=device, dtype=pick_dtype(args.precision, device),
                                 progress=None if args.quiet else (lambda message: print(f"  {message}", flush=True)))
    print("\n".join(format_table(report)))
    if args.json:
        _write_json_atomic(Path(args.json), report)
        print(f"wrote {args.json}")


def add_commands(commands) -> None:
    from ..synthetic import EVALUATION_SEED_START

    synth = commands.add_parser("synth", help="write synthetic talking-face videos with ground truth (training data)")
    synth.add_argument("--out", required=True, help="folder for talker_<seed>.mp4 + talker_<seed>.json")
    synth.add_argument("--count", type=COUNT, required=True, help="number of videos")
    synth.add_argument("--seconds", type=SECONDS, required=True, help="length of each video")
    synth.add_argument("--seed", type=SEED, default=0,
                       help=f"first seed (videos use seed, seed+1, ...); keep below {EVALUATION_SEED_START}, "
                            "the evaluation's held-out range")
    synth.add_argument("--size", type=OptionValue(int, multiple_of=2, at_most=4096), default=64,
                       help="width = height in pixels (default 64)")
    synth.add_argument("--fps", type=FPS, default=25.0, help="frame rate (default 25)")
    synth.add_argument("--speed-range", type=SPEED, nargs=2, default=(0.0, 1.4), metavar=("LOW", "HIGH"),
                       help="each video's head speed (its mean rotation, degrees per frame) is drawn from "
                            "this range (default 0 1.4)")
    synth.set_defaults(run=cmd_synth)

    ev = commands.add_parser("evaluate", help="measure lip sync, identity, speed control and seams of a checkpoint "
                                              "on held-out synthetic talkers")
    ev.add_argument("--checkpoint", required=True, help="EMO checkpoint (.safetensors)")
    ev.add_argument("--count", type=COUNT, default=4, help="held-out talkers (default 4)")
    ev.add_argument("--seconds", type=SECONDS, default=3.0, help="seconds per talker (default 3)")
    ev.add_argument("--first-seed", type=SEED, default=EVALUATION_SEED_START,
                    help=f"seed of the first held-out talker (default {EVALUATION_SEED_START})")
    ev.add_argument("--speed", type=SPEED, default=0.7, help="head speed of the lip-sync runs (default 0.7)")
    ev.add_argument("--speeds", default="0.2,0.7,1.2", help="speeds of the speed-control runs (default 0.2,0.7,1.2)")
    ev.add_argument("--steps", type=STEPS, default=None, help="denoising steps (default: the model's)")
    ev.add_argument("--guidance", type=GUIDANCE, default=None, help="guidance scale (default: the model's)")
    ev.add_argument("--seed", type=SEED, default=0, help="noise seed of the generations")
    ev.add_argument("--overlap-frames", type=OptionValue(int, at_least=0, at_most=1024), default=None,
                    help="frames each clip re-makes from the one before (default: the model's; 0: none)")
    ev.add_argument("--json", default=None, help="write the report here as JSON")
    ev.add_argument("--fid-weights", default=None, help="path of inception-2015-12-05.pt (TorchScript) for FID")
    ev.add_argument("--fvd-weights", default=None, help="path of i3d_torchscript.pt (TorchScript) for FVD")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    ev.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                    help="number format; auto = fp32 on the CPU, bf16 (else fp16) on a GPU")
    ev.set_defaults(run=cmd_evaluate)
