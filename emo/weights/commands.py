"""`python -m emo assemble`: an EMO checkpoint from SD1.5, VAE, wav2vec2 and AnimateDiff files."""

from __future__ import annotations

import logging
from pathlib import Path

from ..runtime.options import SEED

logger = logging.getLogger(__name__)


def cmd_assemble(args) -> None:
    from ..checkpoints import save_checkpoint
    from ..runtime.output import output_path
    from .assemble import assemble, describe_assembly

    out = output_path(args.out, (".safetensors",))
    dtype = None if args.precision == "fp32" else args.precision
    model, report = assemble(args.preset, sd15=args.sd15, vae=args.vae, wav2vec2=args.wav2vec,
                             motion_module=args.motion_module, sd15_ema=args.sd15_ema, seed=args.seed,
                             dtype=dtype)
    path = save_checkpoint(model, out, description=describe_assembly(report, args.motion_module is not None,
                                                                     args.seed))
    count = sum(t.numel() for t in model.state_dict().values())
    print(f"wrote {path} ({count / 1e6:.1f} M parameters, {args.precision})")
    print(f"  loaded: {report.summary()}")
    for line in [*report.warnings, *report.notes]:
        print(f"  {line}")


def cmd_convert(args) -> None:
    from ..checkpoints import save_checkpoint
    from ..families.hallo.convert import convert_hallo_file
    from ..runtime.output import output_path

    out = output_path(args.out, (".safetensors",))
    dtype = None if args.precision == "fp32" else args.precision
    model = convert_hallo_file(args.input, vae=args.vae, wav2vec2=args.wav2vec, dtype=dtype)
    path = save_checkpoint(model, out, description=(
        f"Hallo (fudan-generative-vision/hallo, MIT) converted from {Path(args.input).name}, VAE "
        f"{Path(args.vae).name}, wav2vec2 {Path(args.wav2vec).name}; runs in Hallo mode"))
    print(f"wrote {path} (Hallo mode: 16-frame clips, 2 motion frames, zero-SNR v-prediction DDIM)")


def add_commands(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert another project's released weights into an EMO checkpoint",
        description="Convert Hallo's net.pth (plus the SD1.5 VAE and wav2vec2-base-960h it was "
                    "trained with) into one EMO checkpoint that runs in Hallo mode.")
    convert.add_argument("--from", dest="source", required=True, choices=("hallo",), help="source project")
    convert.add_argument("--in", dest="input", required=True, help="Hallo's pretrained_models/hallo/net.pth")
    convert.add_argument("--vae", required=True, help="sd-vae-ft-mse (file or diffusers folder)")
    convert.add_argument("--wav2vec", required=True, help="wav2vec2-base-960h (HF folder or one file)")
    convert.add_argument("--out", required=True, help="output EMO checkpoint (.safetensors)")
    convert.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "bf16"),
                         help="number format of the written weights")
    convert.set_defaults(run=cmd_convert)

    parser = subparsers.add_parser(
        "assemble", help="build an EMO checkpoint from SD1.5, VAE, wav2vec2 and AnimateDiff weights",
        description="Load pretrained SD1.5 (UNet into the ReferenceNet and the backbone), VAE, wav2vec2 "
                    "and an AnimateDiff motion module into a new EMO model; the layers EMO adds are "
                    "freshly initialised. The result is the starting point for training.")
    parser.add_argument("--preset", default="sd15", choices=("sd15", "tiny"),
                        help="model architecture (tiny: for tests)")
    parser.add_argument("--sd15", required=True,
                        help="SD1.5 checkpoint (.safetensors/.ckpt, original layout) or diffusers folder")
    parser.add_argument("--sd15-ema", action="store_true",
                        help="use the EMA UNet weights of a full training checkpoint (v1-5-pruned.ckpt)")
    parser.add_argument("--vae", default=None,
                        help="VAE file or folder (default: the VAE inside the --sd15 checkpoint)")
    parser.add_argument("--wav2vec", required=True,
                        help="wav2vec2-base-960h folder (config.json + weights) or single .safetensors")
    parser.add_argument("--motion-module", default=None,
                        help="AnimateDiff motion module, e.g. mm_sd_v15_v2.ckpt (default: fresh temporal modules)")
    parser.add_argument("--out", required=True, help="output EMO checkpoint (.safetensors)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="dtype of the written weights (fp32 for training)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the new layers' initialisation")
    parser.set_defaults(run=cmd_assemble)
