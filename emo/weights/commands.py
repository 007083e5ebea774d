"""`python -m emo assemble`: an EMO checkpoint from SD1.5, VAE, wav2vec2 and AnimateDiff files;
`python -m emo convert`: Hallo's or EchoMimic's released weights -> an EMO checkpoint."""

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

    if args.source == "echomimic":
        return convert_echomimic(args)
    if args.acc:
        raise ValueError("--acc is for --from echomimic (EchoMimic's accelerated weights)")
    missing = [option for option, value in (("--vae", args.vae), ("--wav2vec", args.wav2vec)) if value is None]
    if missing:
        raise ValueError(f"--from {args.source} needs {' and '.join(missing)}: a Hallo-lineage net.pth holds "
                         "neither the VAE (sd-vae-ft-mse) nor its wav2vec2 (wav2vec2-base-960h; JoyHallo: "
                         "chinese-wav2vec2-base)")
    out = output_path(args.out, (".safetensors",))
    dtype = None if args.precision == "fp32" else args.precision
    from ..families.hallo.lineage import variant as hallo_variant
    from ..families.hallo.options import HalloOptions

    # --from hallo: the release is detected (JoyHallo from its keys, Hallo2 from its folder).
    model = convert_hallo_file(args.input, vae=args.vae, wav2vec2=args.wav2vec, dtype=dtype,
                               variant=None if args.source == "hallo" else args.source)
    release = hallo_variant(HalloOptions.from_dict(model.config.family_options).variant)
    path = save_checkpoint(model, out, description=(
        f"{release.title} ({release.repo}, MIT) converted from {Path(args.input).name}, VAE "
        f"{Path(args.vae).name}, wav2vec2 {Path(args.wav2vec).name}; runs in Hallo mode"))
    print(f"wrote {path} ({release.title}, Hallo mode: 16-frame clips, 2 motion frames, zero-SNR v-prediction DDIM)")


def convert_echomimic(args) -> None:
    """EchoMimic's unchanged pretrained_weights folder -> one EMO checkpoint (V1, or acc with
    --acc). Every key of every file is accounted for before anything is written."""
    from ..checkpoints import save_checkpoint
    from ..families.echomimic import convert as echomimic_convert
    from ..runtime.output import output_path

    extra = [option for option, value in (("--vae", args.vae), ("--wav2vec", args.wav2vec)) if value is not None]
    if extra:
        raise ValueError(f"--from echomimic takes the pretrained_weights folder alone (it holds sd-vae-ft-mse and "
                         f"whisper_tiny.pt); leave out {' and '.join(extra)}")
    out = output_path(args.out, (".safetensors",))
    variant = "acc" if args.acc else "v1"
    # MOTION_HEADS read at call time: the head count is not in the files (inference_v2.yaml's 8).
    model = echomimic_convert.load_echomimic_folder(args.input, variant=variant,
                                                    motion_heads=echomimic_convert.MOTION_HEADS)
    dtype = None if args.precision == "fp32" else args.precision
    defaults = model.config.defaults
    path = save_checkpoint(model, out, dtype=dtype, description=(
        f"EchoMimic {variant} (antgroup/echomimic, Apache-2.0) converted from {Path(args.input).name}/ "
        f"({'denoising_unet_acc.pth' if args.acc else 'denoising_unet.pth'}); {defaults.steps} steps at cfg "
        f"{defaults.guidance_scale:g}"))
    print(f"wrote {path} (EchoMimic {variant}: whole video in closed-loop windows of {defaults.frames_per_clip} frames, "
          f"{defaults.steps} steps, cfg {defaults.guidance_scale:g}, {defaults.fps:g} fps, {args.precision})")


def add_commands(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert another project's released weights into an EMO checkpoint",
        description="Convert a Hallo, Hallo2 or JoyHallo net.pth (plus the SD1.5 VAE and the wav2vec2 it was "
                    "trained with) into one EMO checkpoint that runs in Hallo mode, or EchoMimic's "
                    "pretrained_weights folder (V1, or acc with --acc) into one that runs as EchoMimic.")
    convert.add_argument("--from", dest="source", required=True, choices=("hallo", "hallo2", "joyhallo", "echomimic"),
                         help="source project; 'hallo' detects the release (Hallo, Hallo2 in a hallo2 folder, "
                              "JoyHallo from its keys)")
    convert.add_argument("--in", dest="input", required=True,
                         help="hallo: pretrained_models/hallo/net.pth (hallo2/net.pth, joyhallo/net.pth); "
                              "echomimic: the pretrained_weights folder")
    convert.add_argument("--vae", default=None, help="hallo: sd-vae-ft-mse (file or diffusers folder)")
    convert.add_argument("--wav2vec", default=None,
                         help="hallo: wav2vec2-base-960h (Hallo, Hallo2) or chinese-wav2vec2-base (JoyHallo): HF "
                              "folder or one file")
    convert.add_argument("--acc", action="store_true",
                         help="echomimic: the accelerated weights (denoising_unet_acc.pth: 6 steps, cfg 1.0)")
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
