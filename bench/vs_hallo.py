"""Our pipeline beside Hallo's own code: same machine, same random weights, same inputs.

    python bench/vs_hallo.py --hallo PATH_TO_HALLO_CHECKOUT [--hallo-python PY] [--hallo-pythonpath DIR]
                             --device cpu|cuda [--dtype fp32|bf16|fp16] [--arch sd15|tiny] [--size 512] [--frames 16]
                             [--steps 3] [--warmup N] [--json]

Hallo is not part of this repository: its worker (`bench/hallo_worker.py`) imports Hallo's modules
from the checkout at run time, in the interpreter `--hallo-python` names (an environment with
Hallo's pins: diffusers 0.27.2, transformers 4.39.2), or in this one with `--hallo-pythonpath`
first on its PYTHONPATH (a folder holding diffusers 0.27.2, as bench/gpu_run.py installs it).

Both sides hold the same random weights: ours builds Hallo's SD1.5 model (`hallo_sd15_config()`)
and fills every tensor Hallo's `net.pth` has with a value seeded by its `net.pth` name
(`side_by_side.random_weight`); Hallo's worker fills its `Net` the same way and checks that the
key sets and shapes agree (a strict load). Ours runs `EMOPipeline.iter_clips` (one clip of
`--frames` frames, 2 motion frames, guidance 3.5, DDIM), and records what its networks receive:
the ReferenceNet's latents, the face-locator mask, the region masks, the audio features, the face
embedding and the initial noise; Hallo's worker replays `FaceAnimatePipeline.__call__` on them
with Hallo's networks (ReferenceAttentionControl writer/reader, the UNet in Hallo's train-mode
path, CFG, DDIMScheduler). Neither side runs a VAE or wav2vec2 in the figures: Hallo's is given
latents and features; ours uses a tiny random VAE (the latent geometry of SD's) to make its
reference latents and decode, and its time is subtracted.

Ours runs as `emo generate` does, with freed CPU memory kept for reuse (emo/runtime/cpu_memory.py;
`EMO_KEEP_FREED_MEMORY=0` measures without); Hallo's process runs as its scripts do.

Measures, each side in its own process:
- step_s: one denoising step of the clip with guidance = the ReferenceNet write pass + one
  backbone call on the [uncond, cond] batch (mean over the clip's calls);
- clip_s: the whole clip: ReferenceNet once + `--steps` guided steps + the scheduler;
- peak_mb: CUDA max_memory_allocated, or on a CPU the process's peak resident set during the
  work (weights included, their loading not).
Checks that both predict the same noise at the first step (relative L2 within `TOLERANCE`) and
that the final latents of the clip agree too, and prints, last, one JSON line {"device", "dtype",
"ours": {...}, "hallo": {...}, "ratio" (= "ratio_step", Hallo / ours), "ratio_clip",
"step_rel_diff", "clip_rel_diff", "max_rel_diff" (the larger), "equal", "load_average", ...}.
Exits 1 when the outputs differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from side_by_side import (  # noqa: E402
    ARCHS,
    Clock,
    PeakMemory,
    Profile,
    hallo_additional_kwargs,
    load_average,
    parse_dtype,
    random_weight,
    read_json,
    set_threads,
    unet_config,
    write_json,
)

# Relative L2 of the first step's noise prediction, ours vs Hallo's, that counts as equal. fp32:
# the hallo_parity fixture README's rtol (1e-4); its fp16-rounded reference bank already differs
# by ~1e-5 between fp32 and fp64. Half types: a few units of their rounding (2^-8, 2^-11).
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 1e-2}
MOTION_FRAMES = 2  # Hallo's n_motion_frames
GUIDANCE = 3.5  # Hallo's cfg_scale


# ---- our side ----------------------------------------------------------------------------

def build_ours(arch_name: str, dtype: torch.dtype, device: torch.device, seed: int):
    """EMOModel with Hallo's architecture and the shared random weights; returns (model, the
    net.pth keys -> shapes it filled)."""
    from torch import nn

    from emo.config import EMOConfig
    from emo.families.hallo.convert import PREFIXES, hallo_config, hallo_sd15_config, is_extra_to_hallo
    from emo.model import EMOModel
    from emo.weights.assemble import initialise_new_layers
    from emo.weights.layout import put

    tiny = EMOConfig.preset("tiny")
    if arch_name == "sd15":
        config = hallo_sd15_config()
    else:
        arch = ARCHS[arch_name]
        wav2vec2 = {**tiny.audio.wav2vec2, "num_hidden_layers": arch["audioproj"]["blocks"],
                    "hidden_size": arch["audioproj"]["channels"], "num_attention_heads": 2,
                    "intermediate_size": 2 * arch["audioproj"]["channels"]}
        config = hallo_config(unet_config(arch), hallo_additional_kwargs(arch), face_locator=arch["face_locator"],
                              imageproj=arch["imageproj"], audioproj=arch["audioproj"], wav2vec2=wav2vec2,
                              vae=tiny.vae, name=f"hallo-{arch_name}")
    config = replace(config, vae=tiny.vae)  # a VAE of SD's latent geometry that costs nothing
    with torch.device("meta"):
        model = EMOModel(config)
    model.audio_encoder = nn.Module()  # the features are given: no wav2vec2 in memory
    model.to(dtype)
    to_hallo = {ours: theirs for theirs, ours in PREFIXES.items()}
    keys = {}
    for key, tensor in model.state_dict().items():
        if is_extra_to_hallo(key):
            continue
        part = key.split(".", 1)[0] + "."
        hallo_key = to_hallo[part] + key[len(part):]
        keys[hallo_key] = list(tensor.shape)
        put(model, {key: random_weight(hallo_key, tensor.shape, seed, device)}, device)
    initialise_new_layers(model, seed=seed)  # the VAE and the ReferenceNet's unused output layers
    return model.to(device).eval(), keys


def make_inputs(config, size: int, frames: int, seed: int) -> dict:
    from emo.families.hallo.options import HalloOptions

    face_embedding_dim = HalloOptions.from_dict(config.family_options).face_embedding_dim
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.zeros(size, size)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return {
        "image": torch.rand(size, size, 3, generator=generator),
        "mask": mask,
        "audio": torch.randn(frames, config.audio.num_layers, config.audio.hidden_size, generator=generator),
        "face_embedding": torch.randn(face_embedding_dim, generator=generator),
    }


class Probe:
    """Forward hooks on our networks: the time of each call and the first call's tensors."""

    def __init__(self, model, clock: Clock):
        self.clock, self.handles, self._started = clock, [], {}
        self.reset()
        self._watch(model.reference_net, "reference")
        self._watch(model.backbone, "backbone")
        self._watch(model.face_locator, "face_locator")
        for part in (model.vae.encoder, model.vae.decoder):
            self._watch(part, "vae")

    def reset(self):
        self.seconds = {"reference": [], "backbone": [], "face_locator": [], "vae": []}
        self.first = {}

    def _watch(self, module, name):
        def before(module, args, kwargs):
            self.first.setdefault(name + ".args", (args, kwargs))
            self._started[name] = self.clock.now()

        def after(module, args, kwargs, output):
            self.seconds[name].append(self.clock.now() - self._started.pop(name))
            self.first.setdefault(name + ".output", output)

        self.handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        self.handles.append(module.register_forward_hook(after, with_kwargs=True))


def run_ours(job: dict, workdir: Path) -> dict:
    from safetensors.torch import save_file

    from emo.audio import AudioFeatures
    from emo.pipeline import EMOPipeline, GenerationSettings

    from emo.runtime.cpu_memory import keep_freed_memory

    # as `emo generate` runs (emo/runtime/devices.py setup_run); EMO_KEEP_FREED_MEMORY=0: without
    freed_memory = keep_freed_memory()
    device, dtype = torch.device(job["device"]), parse_dtype(job["dtype"])
    model, keys = build_ours(job["arch"], dtype, device, job["seed"])
    write_json(workdir / "keys.json", keys)
    pipe = EMOPipeline(model, device=device, dtype=dtype)
    x = make_inputs(model.config, job["size"], job["frames"], job["seed"])
    audio = AudioFeatures(x["audio"], fps=25.0, waveform=torch.zeros(1, math.ceil(job["frames"] / 25 * 16000)),
                          sample_rate=16000)
    settings = GenerationSettings(size=job["size"], frames_per_clip=job["frames"], motion_frames=MOTION_FRAMES,
                                  steps=job["steps"], guidance_scale=GUIDANCE, seed=job["seed"],
                                  scheduler="ddim", region_scales=(1.0, 1.0, 1.0))
    final = {}

    def clip(steps):
        return list(pipe.iter_clips(x["image"], audio, face_mask=x["mask"], face_embedding=x["face_embedding"],
                                    settings=replace(settings, steps=steps),
                                    callback=lambda p: final.__setitem__("latents", p.latents)))

    clock, memory = Clock(device), PeakMemory(device)
    probe = Probe(model, clock)
    for _ in range(job["warmup"]):
        clip(1)
    probe.reset()
    memory.reset()
    load = [load_average()]
    start = clock.now()
    with Profile(job, workdir, "ours"):
        clip(job["steps"])
    seconds = clock.now() - start - sum(probe.seconds["vae"])
    peak = memory.peak_mb()
    load.append(load_average())

    (images,), _ = probe.first["reference.args"]
    args, kwargs = probe.first["backbone.args"]
    sample, timestep = args[:2]
    (face_region,), _ = probe.first["face_locator.args"]
    h, w = sample.shape[-2:]
    noise = torch.randn((1, 4, job["frames"], h, w), generator=torch.Generator().manual_seed(job["seed"]))
    if not torch.equal(sample[:1].float(), noise.to(sample.dtype).float()):
        raise RuntimeError("vs_hallo: the pipeline's initial noise is not torch.randn(seed) any more; "
                           "update run_ours to record it.")
    tensors = {
        "ref_latents": images[0].float(),  # (1+M, 4, h, w): [reference, motion frames]
        "face_region": face_region.float(),  # (1, 1, H, W)
        "audio": x["audio"], "face_embedding": x["face_embedding"], "noise": noise,
        "noise_pred": probe.first["backbone.output"].float(),  # (2, 4, F, h, w) [uncond, cond]
        "latents": final["latents"].float(),
    }
    for level, masks in enumerate(kwargs["audio"].masks):  # Hallo's RegionAudioInputs: [full, face, lip]
        for kind, m in zip(("full", "face", "lip"), masks):
            tensors[f"mask.{kind}.{level}"] = m.float()  # (1, h_l * w_l)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(workdir / "ours.safetensors"))
    return timings(probe.seconds["reference"], probe.seconds["backbone"], seconds, peak,
                   vae_s=sum(probe.seconds["vae"]), first_timestep=int(timestep), load=load,
                   freed_memory=freed_memory)


def timings(reference_s: list, backbone_s: list, clip_s: float, peak_mb: float, **extra) -> dict:
    step = sum(reference_s) / max(len(reference_s), 1) + sum(backbone_s) / max(len(backbone_s), 1)
    return {"step_s": step, "clip_s": clip_s, "peak_mb": peak_mb, "reference_s": sum(reference_s),
            "backbone_calls": len(backbone_s), "backbone_s": sum(backbone_s), **extra}


# ---- the parent: both sides, compared ------------------------------------------------------

def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def run_side(command: list, what: str, pythonpath: str | None = None) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    done = subprocess.run(command, env=env)
    if done.returncode:
        raise SystemExit(f"vs_hallo: the {what} side failed (exit {done.returncode}); its output is above.")


def compare(job: dict, workdir: Path) -> dict:
    from safetensors.torch import load_file

    ours, hallo = load_file(str(workdir / "ours.safetensors")), load_file(str(workdir / "hallo.safetensors"))
    o, h = read_json(workdir / "ours.json"), read_json(workdir / "hallo.json")
    step_diff = rel_l2(ours["noise_pred"], hallo["noise_pred"])
    clip_diff = rel_l2(ours["latents"], hallo["latents"])
    keep = ("step_s", "clip_s", "peak_mb", "reference_s", "backbone_s")
    loads = {side: r.get("load") for side, r in (("ours", o), ("hallo", h))}
    return {
        "device": job["device_name"], "dtype": job["dtype"], "arch": job["arch"], "size": job["size"],
        "frames": job["frames"], "steps": job["steps"], "threads": torch.get_num_threads(),
        "ours": {k: round(o[k], 3) for k in keep}, "hallo": {k: round(h[k], 3) for k in keep},
        "ratio": round(h["step_s"] / o["step_s"], 3),  # Hallo / ours, one guided step (> 1: ours faster)
        "ratio_step": round(h["step_s"] / o["step_s"], 3), "ratio_clip": round(h["clip_s"] / o["clip_s"], 3),
        "step_rel_diff": step_diff, "clip_rel_diff": clip_diff, "max_rel_diff": max(step_diff, clip_diff),
        "equal": max(step_diff, clip_diff) <= TOLERANCE[job["dtype"]],
        "load_average": loads,  # 1-minute load average before and after each side's measured clip
        "ours_freed_memory": o.get("freed_memory"),  # emo.runtime.cpu_memory: "kept" as the CLI runs
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hallo", help="a checkout of fudan-generative-vision/hallo")
    parser.add_argument("--hallo-python", default=sys.executable, help="interpreter with Hallo's pins")
    parser.add_argument("--hallo-pythonpath", help="put this folder first on PYTHONPATH for Hallo's side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(TOLERANCE))
    parser.add_argument("--arch", default="sd15", choices=sorted(ARCHS), help="sd15: full size; tiny: checks")
    parser.add_argument("--size", type=int, default=512, help="pixels (a multiple of 64)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of the whole-clip measure")
    parser.add_argument("--warmup", type=int, default=None, help="1-step clips first (default: 1 on cuda, 0 on cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the exchanged tensors here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line (no table)")
    parser.add_argument("--profile", action="store_true",
                        help="write each side's operator profile of the measured clip to the workdir "
                             "(profile_ours.txt, profile_hallo.txt; its overhead makes those timings unfit to record)")
    parser.add_argument("--worker", choices=("ours",), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads()
    if args.worker == "ours":
        job = read_json(Path(args.workdir) / "job.json")
        write_json(Path(args.workdir) / "ours.json", run_ours(job, Path(args.workdir)))
        return 0
    if not args.hallo or not (Path(args.hallo) / "hallo" / "models" / "unet_3d.py").is_file():
        raise SystemExit(f"vs_hallo: --hallo {args.hallo!r} is not a Hallo checkout (no hallo/models/unet_3d.py); "
                         "clone fudan-generative-vision/hallo and give its folder.")
    if args.size % 64:
        raise SystemExit(f"vs_hallo: --size {args.size} must be a multiple of 64 (8x VAE, 8x UNet).")
    device = torch.device(args.device)
    job = {"arch": args.arch, "size": args.size, "frames": args.frames, "steps": args.steps,
           "dtype": args.dtype, "device": args.device, "seed": args.seed,
           "profile": args.profile, "warmup": args.warmup if args.warmup is not None else int(device.type == "cuda"),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    with tempfile.TemporaryDirectory(prefix="vs_hallo_") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(workdir / "job.json", job)
        run_side([sys.executable, str(BENCH / "vs_hallo.py"), "--worker", "ours", "--workdir", str(workdir)], "our")
        run_side([args.hallo_python, str(BENCH / "hallo_worker.py"), "--hallo", str(args.hallo),
                  "--workdir", str(workdir)], "Hallo", args.hallo_pythonpath)
        result = compare(job, workdir)
    if not args.json:
        print(f"{'':6} {'step s':>9} {'clip s':>9} {'peak MB':>9}")
        for side in ("ours", "hallo"):
            r = result[side]
            print(f"{side:6} {r['step_s']:9.3f} {r['clip_s']:9.3f} {r['peak_mb']:9.0f}")
        print(f"Hallo / ours: step {result['ratio_step']:.2f}x, clip {result['ratio_clip']:.2f}x; "
              f"rel. L2 first prediction {result['step_rel_diff']:.2e}, final latents {result['clip_rel_diff']:.2e} ({'equal' if result['equal'] else 'DIFFERENT'})")
    print(json.dumps(result))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
