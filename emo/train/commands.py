"""`python -m emo prepare` and `python -m emo train` (also `accelerate launch -m emo train ...`).

Registered in emo/cli.py's COMMAND_MODULES; heavy imports happen only when a command runs.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ..runtime.options import COUNT, FPS, SECONDS, SIZE, OptionValue


def cmd_prepare(args) -> None:
    from tqdm import tqdm

    from ..data.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(fps=args.fps, size=args.size, store=args.store, speed_estimator=args.speed_estimator,
                             speed_buckets=args.speed_buckets, min_seconds=args.min_seconds,
                             max_clip_seconds=args.max_clip_seconds, detect_every=args.detect_every,
                             crop_margin=args.crop_margin, device=args.device,
                             ground_truth=not args.no_ground_truth)
    bar = tqdm(unit="video", desc="prepare", disable=args.quiet)

    def on_start(pending: int) -> None:
        bar.reset(total=pending)

    def on_video(record: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{record['source'][-30:]}: {record['status']}")

    try:
        summary = prepare_dataset(Path(args.videos), Path(args.out), args.checkpoint, options,
                                  workers=args.workers, retry_skipped=args.retry_skipped,
                                  on_start=on_start, on_video=on_video)
    finally:
        bar.close()
    print("\n".join(summary.lines()))


def cmd_train(args) -> None:
    from tqdm import tqdm

    from .config import load_train_config
    from .trainer import Trainer, describe_run

    config = load_train_config(args.config, args.set)
    if config.stage == "vae":
        _train_autoencoder(config, args)
        return
    trainer = Trainer(config)
    main_process = trainer.accelerator.is_main_process
    if main_process:
        print(describe_run(config))
    trainer.setup()
    if main_process:
        print("\n".join(f"  {note}" for note in trainer.notes))

    stop_requested = []

    def request_stop(signum, frame) -> None:  # preemption: save a state at the next step, then exit
        stop_requested.append(signum)

    previous = signal.signal(signal.SIGTERM, request_stop)
    bar = tqdm(total=config.max_steps, initial=trainer.progress.step, unit="step", desc=f"stage {config.stage}",
               disable=args.quiet or not main_process)

    def on_step(metrics: dict) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    try:
        path = trainer.train(should_stop=lambda: bool(stop_requested), on_step=on_step)
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    if main_process:
        print(f"wrote {path}" if path is not None else
              f"stopped at step {trainer.progress.step}; the same command resumes", file=sys.stdout)


def _train_autoencoder(config, args) -> None:
    """Stage `vae` (emo/train/autoencoder.py): one process, no resumable state."""
    from tqdm import tqdm

    from .autoencoder import train_autoencoder

    print(f"stage vae (the autoencoder only), {config.max_steps} steps of {config.batch_size} frames, "
          f"lr {config.optimizer.learning_rate:g}, output {config.output_dir}")
    with tqdm(total=config.max_steps, unit="step", desc="stage vae", disable=args.quiet) as bar:
        def on_step(metrics: dict) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")

        path = train_autoencoder(config, on_step=on_step)
    print(f"wrote {path}")


def add_commands(commands) -> None:
    prep = commands.add_parser("prepare", help="talking/singing videos -> an EMO training dataset")
    prep.add_argument("--videos", required=True,
                      help="folder of videos (searched recursively; any container FFmpeg reads)")
    prep.add_argument("--out", required=True, help="dataset folder (created; an existing one is resumed)")
    prep.add_argument("--checkpoint", required=True,
                      help="the EMO checkpoint you will train from: its wav2vec2 encodes the audio "
                           "(and its VAE the latents)")
    prep.add_argument("--fps", type=FPS, default=25.0, help="frame rate of the dataset (default 25, as the paper)")
    prep.add_argument("--size", type=SIZE, default=512, help="crop size in pixels (default 512, as the paper)")
    prep.add_argument("--store", choices=("frames", "latents", "both"), default="frames",
                      help="keep the cropped frames, their VAE latents (smaller, faster to train), or both")
    prep.add_argument("--workers", type=OptionValue(int, at_least=1, at_most=256), default=1,
                      help="parallel processes (each loads its own encoders)")
    prep.add_argument("--speed-estimator", default="face-align",
                      help="head-speed estimator: face-align, box-motion, or package.module:factory")
    prep.add_argument("--speed-buckets", type=OptionValue(int, at_least=1, at_most=1000), default=None,
                      help="number of speed buckets (default: the checkpoint's)")
    prep.add_argument("--min-seconds", type=OptionValue(float, at_least=0), default=1.0, help="shortest usable clip")
    prep.add_argument("--max-clip-seconds", type=SECONDS, default=10.0, help="longer stretches are split into clips")
    prep.add_argument("--detect-every", type=COUNT, default=1, help="run face detection on every k-th frame")
    prep.add_argument("--crop-margin", type=OptionValue(float, at_least=0, at_most=10), default=0.8,
                      help="crop side = face boxes' union + margin x face size")
    prep.add_argument("--no-ground-truth", action="store_true",
                      help="detect faces and estimate head speeds even for `emo synth` talkers, whose exact face "
                           "boxes and speeds are otherwise read from the .json beside each video")
    prep.add_argument("--device", default="cpu", help="device for wav2vec2 and the VAE (cpu, cuda, cuda:1)")
    prep.add_argument("--retry-skipped", action="store_true", help="try again the videos skipped by earlier runs")
    prep.set_defaults(run=cmd_prepare)

    train = commands.add_parser("train", help="train a stage of EMO (configs/train/*.yaml); "
                                              "multi-GPU: accelerate launch -m emo train ...")
    train.add_argument("--config", required=True, help="training config YAML (configs/train/stage1.yaml, ...)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set max_steps=100 --set data.root=data/hdtf (repeatable)")
    train.set_defaults(run=cmd_train)
