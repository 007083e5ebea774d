"""`python -m emo ...`: the command line of the EMO library (no ComfyUI needed).

Commands:
  generate        portrait + voice -> talking-head video (mp4/webm with the audio)
  batch           a queue of generations from a JSONL file, one video per line, skipping
                  finished ones (`accelerate launch -m emo batch ...` spreads it over GPUs/nodes)
  new-checkpoint  write a randomly initialised checkpoint of a preset (tests, benchmarks, training)
  info            describe a checkpoint

User errors print one line `emo <command>: error: ...` and exit with status 2; no partial
output file is left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from . import batch
from .checkpoints import describe, save_checkpoint
from .config import PRESETS
from .evaluate import commands as evaluate_commands
from .model import EMOModel
from .pipeline import GenerationCancelled
from .runtime.devices import pick_device
from .runtime.jobs import (
    DEMO_NOTE,
    add_job_options,
    add_runtime_options,
    checkpoint_or_demo,
    load_hallo_pipeline,
    load_pipeline,
    prepare_job,
    read_job_inputs,
    render_job,
)
from .train import commands as train_commands
from .weights import commands as weights_commands

logger = logging.getLogger("emo.cli")


def cmd_generate(args) -> None:
    inputs = read_job_inputs(args)
    if args.hallo_dir is not None:
        if args.checkpoint is not None:
            raise ValueError("--hallo-dir and --checkpoint both given; --hallo-dir loads Hallo's own files, give one")
        pipeline = load_hallo_pipeline(args.hallo_dir, pick_device(args.device), args.precision,
                                       identity=not args.no_identity)
    else:
        checkpoint = checkpoint_or_demo(args.checkpoint)
        if args.checkpoint is None:
            print(DEMO_NOTE.format(name=checkpoint.name))
        pipeline = load_pipeline(checkpoint, pick_device(args.device), args.precision)
    video = prepare_job(pipeline, args, inputs)
    with tqdm(total=video.total_steps, desc=f"EMO {video.num_frames} frames", unit="step",
              disable=args.quiet) as bar:
        def on_progress(p):
            bar.update(1)
            bar.set_postfix_str(f"clip {p.clip + 1}/{p.num_clips}")

        render_job(video, on_progress)
    print(f"wrote {video.out} ({video.summary()})")


def cmd_new_checkpoint(args) -> None:
    model = EMOModel.from_preset(args.preset, seed=args.seed)
    path = save_checkpoint(model, args.out, dtype=None if args.precision == "fp32" else args.precision,
                           description=f"randomly initialised {args.preset} EMO model (seed {args.seed}); "
                                       "not trained - its videos are noise")
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def cmd_info(args) -> None:
    info = describe(args.checkpoint)
    print(f"{args.checkpoint}: {info['name']}")
    if info["description"]:
        print(f"  {info['description']}")
    print("  defaults: " + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()))


# Modules that add more commands: each has `add_commands(subparsers)`, whose parsers set
# `run=function(args)`. Keeping them apart keeps this file small as commands grow.
COMMAND_MODULES = (weights_commands, train_commands, evaluate_commands, batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emo", description="EMO: Emote Portrait Alive")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands)

    gen = commands.add_parser("generate", help="portrait + voice -> talking video")
    gen.add_argument("--image", required=True, help="portrait image (any format PIL reads)")
    gen.add_argument("--audio", required=True, help="voice audio (wav/mp3/flac/ogg/m4a, any rate)")
    gen.add_argument("--out", required=True, help="output video, .mp4 (H.264+AAC) or .webm (VP9+Opus)")
    add_job_options(gen)
    gen.add_argument("--hallo-dir", default=None, metavar="PRETRAINED_MODELS",
                     help="Hallo's unchanged pretrained_models folder (hallo/net.pth, sd-vae-ft-mse, "
                          "wav2vec/wav2vec2-base-960h, face_analysis/models, audio_separator, "
                          "stable-diffusion-v1-5/unet/config.json): Hallo with its identity, masks and audio "
                          "front end; replaces --checkpoint")
    add_runtime_options(gen)
    gen.set_defaults(run=cmd_generate)

    new = commands.add_parser("new-checkpoint", help="write a randomly initialised checkpoint")
    new.add_argument("--preset", required=True, choices=PRESETS)
    new.add_argument("--out", required=True)
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    new.set_defaults(run=cmd_new_checkpoint)

    info = commands.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.run(args)  # None, or an exit status (batch: 1 when a job failed)
    except (FileNotFoundError, ValueError, GenerationCancelled) as error:
        print(f"emo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emo {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
