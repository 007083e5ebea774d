"""Hallo's side of `bench/vs_hallo.py`: Hallo's own networks, imported from a checkout at run time.

    python bench/hallo_worker.py --hallo PATH_TO_HALLO_CHECKOUT --workdir DIR

Runs in Hallo's environment (diffusers 0.27.2): it imports nothing of `emo`, only torch, diffusers,
`side_by_side` and Hallo's modules. It builds the five networks as Hallo's scripts/inference.py
does (the reference UNet in eval mode, the denoising UNet as `from_pretrained_2d` leaves it: train
mode, gradient checkpointing on), fills them with the shared random weights (checking that the keys
are exactly those our side filled), and replays `FaceAnimatePipeline.__call__` without the VAE on
the inputs our side recorded in DIR/ours.safetensors. Writes DIR/hallo.json (timings) and
DIR/hallo.safetensors (first noise prediction, final latents).
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import (  # noqa: E402
    ARCHS,
    HALLO_SCHEDULER,
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


def import_hallo(checkout: str):
    sys.path.insert(0, str(Path(checkout).resolve()))
    import diffusers  # noqa: F401  (first: it looks xformers up, and must find none)

    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        # hallo/models/motion_module.py imports xformers at the top but calls it only after
        # set_use_memory_efficient_attention_xformers(), which inference never does.
        sys.modules["xformers"] = types.ModuleType("xformers")
        sys.modules["xformers.ops"] = types.ModuleType("xformers.ops")
        sys.modules["xformers"].ops = sys.modules["xformers.ops"]
    from hallo.models import audio_proj, face_locator, image_proj, mutual_self_attention, unet_2d_condition, unet_3d

    return types.SimpleNamespace(
        UNet2D=unet_2d_condition.UNet2DConditionModel, UNet3D=unet_3d.UNet3DConditionModel,
        FaceLocator=face_locator.FaceLocator, ImageProj=image_proj.ImageProjModel,
        AudioProj=audio_proj.AudioProjModel, Control=mutual_self_attention.ReferenceAttentionControl)


def build_hallo(hallo, arch: dict, keys: dict, seed: int, device: torch.device) -> nn.Module:
    """Hallo's `Net` (same attribute names, so the same state-dict keys), shared random weights."""
    config = unet_config(arch)
    config_3d = {**config, "_class_name": "UNet3DConditionModel",  # what from_pretrained_2d changes
                 "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                 "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
                 "mid_block_type": "UNetMidBlock3DCrossAttn"}
    with torch.device("meta"):
        net = nn.Module()
        net.reference_unet = hallo.UNet2D.from_config(config)
        net.denoising_unet = hallo.UNet3D.from_config(config_3d, **hallo_additional_kwargs(arch))
        net.face_locator = hallo.FaceLocator(conditioning_embedding_channels=config["block_out_channels"][0],
                                             **arch["face_locator"])
        net.imageproj = hallo.ImageProj(cross_attention_dim=config["cross_attention_dim"], **arch["imageproj"])
        net.audioproj = hallo.AudioProj(**arch["audioproj"])
    net.to_empty(device=device)
    state = net.state_dict()
    mine = {k: list(v.shape) for k, v in state.items()}
    if mine != keys:
        missing, unexpected = sorted(set(keys) - set(mine)), sorted(set(mine) - set(keys))
        shapes = sorted(k for k in set(mine) & set(keys) if mine[k] != keys[k])
        raise SystemExit(f"hallo_worker: Hallo's Net and our model disagree on the net.pth layout: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:5]}")
    with torch.no_grad():
        for key, tensor in state.items():
            tensor.copy_(random_weight(key, tensor.shape, seed, device))
    net.reference_unet.eval()  # from_pretrained calls eval(); from_pretrained_2d (from_config) does not
    net.reference_unet.enable_gradient_checkpointing()
    net.denoising_unet.enable_gradient_checkpointing()
    return net.requires_grad_(False)


def window(audio: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """scripts/inference.py `process_audio_emb`: row i stacks raw[clamp(i + j)] for j in -r..r."""
    n = audio.shape[0]
    index = (torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)).clamp(0, n - 1)
    return audio[index]


@torch.no_grad()
def denoise_clip(hallo, net, x: dict, steps: int, frames: int, clock: Clock, seconds: dict):
    """FaceAnimatePipeline.__call__ with guidance, from the reference latents on (no VAE)."""
    from diffusers import DDIMScheduler

    device, dtype = clock.device, net.denoising_unet.dtype
    face_emb = x["face_embedding"].reshape(1, -1).to(device, dtype)
    context = torch.cat([net.imageproj(torch.zeros_like(face_emb)), net.imageproj(face_emb)])
    writer = hallo.Control(net.reference_unet, do_classifier_free_guidance=True, mode="write", batch_size=1,
                           fusion_blocks="full")
    reader = hallo.Control(net.denoising_unet, do_classifier_free_guidance=True, mode="read", batch_size=1,
                           fusion_blocks="full")
    latents = x["noise"].to(device, dtype)  # Hallo draws its latents in the weights' dtype
    region = x["face_region"].expand(-1, 3, -1, -1).to(device, dtype)  # (1, 3, H, W)
    region = region.unsqueeze(1).repeat(1, frames, 1, 1, 1).transpose(1, 2)  # (1, 3, F, H, W)
    located = net.face_locator(region)
    located = torch.cat([torch.zeros_like(located), located])
    masks = {kind: [torch.cat([x[f"mask.{kind}.{level}"].repeat(frames, 1)] * 2).to(device, dtype)
                    for level in range(4)] for kind in ("full", "face", "lip")}
    audio = net.audioproj(window(x["audio"])[:frames][None].to(device, dtype))
    audio = torch.cat([torch.zeros_like(audio), audio])
    scheduler = DDIMScheduler(**HALLO_SCHEDULER)
    scheduler.set_timesteps(steps, device=device)
    first = None
    for i, t in enumerate(scheduler.timesteps):
        if i == 0:
            start = clock.now()
            net.reference_unet(x["ref_latents"].to(device, dtype).repeat(2, 1, 1, 1), torch.zeros_like(t),
                               encoder_hidden_states=context, return_dict=False)
            reader.update(writer)
            seconds["reference"].append(clock.now() - start)
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        start = clock.now()
        prediction = net.denoising_unet(model_input, t, encoder_hidden_states=context, mask_cond_fea=located,
                                        full_mask=masks["full"], face_mask=masks["face"], lip_mask=masks["lip"],
                                        audio_embedding=audio, motion_scale=[1.0, 1.0, 1.0], return_dict=False)[0]
        seconds["backbone"].append(clock.now() - start)
        first = prediction if first is None else first
        uncond, cond = prediction.chunk(2)
        latents = scheduler.step(uncond + 3.5 * (cond - uncond), t, latents, eta=0.0, return_dict=False)[0]
    reader.clear()
    writer.clear()
    return first, latents


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hallo", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    set_threads()
    from safetensors.torch import load_file, save_file

    workdir = Path(args.workdir)
    job = read_json(workdir / "job.json")
    device, dtype = torch.device(job["device"]), parse_dtype(job["dtype"])
    hallo = import_hallo(args.hallo)
    net = build_hallo(hallo, ARCHS[job["arch"]], read_json(workdir / "keys.json"), job["seed"], device)
    net.to(device=device, dtype=dtype)
    x = load_file(str(workdir / "ours.safetensors"))
    clock, memory = Clock(device), PeakMemory(device)
    for _ in range(job["warmup"]):
        denoise_clip(hallo, net, x, 1, job["frames"], clock, {"reference": [], "backbone": []})
    seconds = {"reference": [], "backbone": []}
    memory.reset()
    load = [load_average()]
    start = clock.now()
    with Profile(job, workdir, "hallo"):
        first, latents = denoise_clip(hallo, net, x, job["steps"], job["frames"], clock, seconds)
    clip = clock.now() - start
    peak = memory.peak_mb()
    load.append(load_average())
    save_file({"noise_pred": first.float().cpu().contiguous(), "latents": latents.float().cpu().contiguous()},
              str(workdir / "hallo.safetensors"))
    step = seconds["reference"][0] + sum(seconds["backbone"]) / len(seconds["backbone"])
    write_json(workdir / "hallo.json", {"step_s": step, "clip_s": clip, "peak_mb": peak,
                                        "reference_s": seconds["reference"][0],
                                        "backbone_calls": len(seconds["backbone"]),
                                        "backbone_s": sum(seconds["backbone"]), "load": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
