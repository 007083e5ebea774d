"""`emo ...` (or `python -m emo ...`): the command line of the EMO library (no ComfyUI needed).

Commands:
  generate        portrait + voice -> talking-head video (mp4/webm with the audio)
  batch           a queue of generations from a JSONL file, one video per line, skipping
                  finished ones (`accelerate launch -m emo batch ...` spreads it over GPUs/nodes)
  new-checkpoint  write a randomly initialised checkpoint of a preset (tests, benchmarks, training)
  info            describe a checkpoint
  and convert, assemble, prepare, train, synth, evaluate (from emo.weights, emo.train, emo.evaluate)

`-v/--verbose` and `-q/--quiet` work before or after the command. A bad option value prints one
line `emo <command>: error: argument --fps: ...` and exits with status 2 before any file is read;
so do bad inputs found later (no partial output file is left behind). Unexpected errors print one
line too (status 1); `-v` shows their traceback.
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a machine that other work keeps busy they then burn
# the CPU time the working threads need (the demo job ran 3.4x slower alone and 8.3x slower
# beside a busy neighbour, with 3.8-8.9x the CPU time: bench/threads.py, bench/RESULTS.md).
# Passive threads sleep. libgomp reads this once, when torch is imported, so it is set here,
# before any import of torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from . import batch  # noqa: E402
from .checkpoints import describe, save_checkpoint  # noqa: E402
from .config import PRESETS  # noqa: E402
from .evaluate import commands as evaluate_commands  # noqa: E402
from .model import EMOModel  # noqa: E402
from .pipeline import GenerationCancelled  # noqa: E402
from .runtime.devices import pick_device, pick_dtype, setup_run  # noqa: E402
from .runtime.jobs import (  # noqa: E402
    DEMO_NOTE,
    SEED,
    add_echomimic_options,
    add_job_options,
    add_runtime_options,
    checkpoint_or_demo,
    echomimic_pipeline,
    load_hallo_pipeline,
    load_pipeline,
    prepare_job,
    read_job_inputs,
    render_job,
)
from .runtime.output import output_path  # noqa: E402
from .train import commands as train_commands  # noqa: E402
from .weights import commands as weights_commands  # noqa: E402

logger = logging.getLogger("emo.cli")

PROG = "emo"


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def cmd_generate(args) -> None:
    inputs = read_job_inputs(args)
    device = pick_device(args.device)
    threads = setup_run(args.threads, args.deterministic)
    if args.hallo_dir is not None and args.echomimic_dir is not None:
        raise ValueError("--hallo-dir and --echomimic-dir both given; give one model")
    if args.hallo_dir is not None:
        if args.checkpoint is not None:
            raise ValueError("--hallo-dir and --checkpoint both given; --hallo-dir loads Hallo's own files, give one")
        pipeline = load_hallo_pipeline(args.hallo_dir, device, args.precision, identity=not args.no_identity)
    else:
        pipeline = echomimic_pipeline(args, device)  # None without --echomimic-dir
    if pipeline is None:
        checkpoint = checkpoint_or_demo(args.checkpoint)
        if args.checkpoint is None:
            print(DEMO_NOTE.format(name=checkpoint.name))
        pipeline = load_pipeline(checkpoint, device, args.precision)
    video = prepare_job(pipeline, args, inputs)
    for note in video.notes:
        print(f"{PROG} generate: {note}", file=sys.stderr)
    if not args.quiet:
        dtype = str(pick_dtype(args.precision, device)).removeprefix("torch.")
        print(f"{video.plan()}; on {device} in {dtype}" + (f" with {threads}" if device.type == "cpu" else ""),
              flush=True)
    with tqdm(total=video.total_steps, desc=f"EMO {video.num_frames} frames", unit="step",
              disable=args.quiet) as bar:
        def on_progress(p):
            bar.update(1)
            bar.set_postfix_str(f"clip {p.clip + 1}/{p.num_clips}")

        def on_clip(index, count, seconds):
            # The first clip carries every per-clip cost (ReferenceNet, decode, motion-frame
            # encode), and the others are the same shape: an honest estimate of the rest.
            if index == 0 and count > 1 and not args.quiet:
                bar.write(f"clip 1/{count} took {seconds:.1f} s: about {format_seconds(seconds * (count - 1))} "
                          f"for the other {count - 1}")

        render_job(video, on_progress, on_clip, deterministic=args.deterministic)
    print(f"wrote {video.out} ({video.summary()})")


def cmd_new_checkpoint(args) -> None:
    out = output_path(args.out, (".safetensors",), option="--out")
    model = EMOModel.from_preset(args.preset, seed=args.seed)
    path = save_checkpoint(model, out, dtype=None if args.precision == "fp32" else args.precision,
                           description=f"randomly initialised {args.preset} EMO model (seed {args.seed}); "
                                       "not trained - its videos are noise")
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")


def cmd_info(args) -> None:
    if Path(args.checkpoint).suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        # A released Hallo / Hallo2 / JoyHallo net.pth, before conversion.
        from .families.hallo.lineage import describe_net_file

        info = describe_net_file(args.checkpoint)
    else:
        info = describe(args.checkpoint)
    print(f"{args.checkpoint}: {info['name']}")
    if info["description"]:
        print(f"  {info['description']}")
    if info.get("family"):
        print(f"  family: {info['family']}" + (f" (variant {info['variant']})" if info.get("variant") else ""))
    print("  defaults: " + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()))


# ---- the parser ----------------------------------------------------------------------------------
class HelpFormatter(argparse.HelpFormatter):
    """Shows "(default: X)" after an option's help, unless the help already says its default or
    there is none worth saying (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.required
                or action.default is None or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def add_global_flags(parser: argparse.ArgumentParser, default) -> None:
    """-v/-q, on the main parser (default False) and on every command's (default SUPPRESS, so a
    flag given before the command is not reset by the command's parser)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log what happens; show the traceback of unexpected errors")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no plan or progress lines (warnings and errors still show)")


class CommandParser(argparse.ArgumentParser):
    """A command's parser (`emo generate`, ...): the shared -v/-q, defaults in the help, and a
    usage error in one line, `emo generate: error: argument --fps: ...`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)
        add_global_flags(self, default=argparse.SUPPRESS)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class MainParser(CommandParser):
    def __init__(self, **kwargs):
        argparse.ArgumentParser.__init__(self, formatter_class=HelpFormatter, **kwargs)
        add_global_flags(self, default=False)


# Modules that add more commands: each has `add_commands(subparsers)`, whose parsers set
# `run=function(args)`. Keeping them apart keeps this file small as commands grow.
COMMAND_MODULES = (weights_commands, train_commands, evaluate_commands, batch)


def build_parser() -> argparse.ArgumentParser:
    parser = MainParser(prog=PROG, description="EMO (Emote Portrait Alive): a portrait and a voice make a "
                                               "talking or singing video. `emo COMMAND --help` for a command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)

    gen = commands.add_parser("generate", help="portrait + voice -> talking video",
                              description="A portrait and a voice make a talking or singing video. Without "
                                          "--checkpoint the bundled demo model runs (synthetic drawn faces only).")
    gen.add_argument("--image", required=True, help="portrait image (any format Pillow reads)")
    gen.add_argument("--audio", required=True,
                     help="voice audio (wav/mp3/flac/ogg/m4a, or a video's sound track; any rate)")
    gen.add_argument("--out", required=True,
                     help="output video, .mp4 (H.264+AAC) or .webm (VP9+Opus); missing folders are created")
    add_job_options(gen)
    add_echomimic_options(gen)
    gen.add_argument("--hallo-dir", default=None, metavar="PRETRAINED_MODELS",
                     help="Hallo's unchanged pretrained_models folder (hallo/net.pth, sd-vae-ft-mse, "
                          "wav2vec/wav2vec2-base-960h, face_analysis/models, audio_separator, "
                          "stable-diffusion-v1-5/unet/config.json): Hallo with its identity, masks and audio "
                          "front end; replaces --checkpoint")
    add_runtime_options(gen)
    gen.set_defaults(run=cmd_generate)

    new = commands.add_parser("new-checkpoint", help="write a randomly initialised checkpoint (tests, benchmarks)",
                              description="Write a randomly initialised EMO checkpoint of a preset: the "
                                          "starting point of training from scratch, or a model for tests and "
                                          "benchmarks. Its videos are noise.")
    new.add_argument("--preset", required=True, choices=PRESETS, help="architecture: " + ", ".join(PRESETS))
    new.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    new.add_argument("--seed", type=SEED, default=0, help="seed of the random weights")
    new.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                     help="number format of the written weights")
    new.set_defaults(run=cmd_new_checkpoint)

    info = commands.add_parser("info", help="describe a checkpoint",
                               description="Print a checkpoint's name, description and the inference "
                                           "settings it uses by default.")
    info.add_argument("checkpoint", help="an EMO checkpoint (.safetensors)")
    info.set_defaults(run=cmd_info)

    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 1 failed, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the command's parser: `emo generate: error: unrecognized arguments: ...`
            command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as done:  # --help (0) or a usage error (2), already printed
        return done.code if isinstance(done.code, int) else 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    where = f"{PROG} {args.command}"
    try:
        status = args.run(args)  # None, or an exit status (batch: 1 when a job failed)
    except (FileNotFoundError, ValueError, GenerationCancelled) as error:
        print(f"{where}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{where}: interrupted; no output written", file=sys.stderr)
        return 130
    except torch.OutOfMemoryError:
        if args.verbose:
            raise
        print(f"{where}: error: out of memory on {getattr(args, 'device', 'the device')}; try a smaller --size or "
              "--frames-per-clip, --precision fp16, or --device cpu", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder without write permission, ...
        if args.verbose:
            raise
        print(f"{where}: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if args.verbose:
            raise
        print(f"{where}: error: unexpected {type(error).__name__}: {error} (run again with -v for the traceback, "
              "and please report it)", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


def run() -> None:
    """The installed `emo` command (pyproject [project.scripts]) and `python -m emo`."""
    sys.exit(main())
