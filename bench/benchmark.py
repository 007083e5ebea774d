"""EMO inference benchmark: baseline vs optimised settings, measured in one run on the same inputs.

    python bench/benchmark.py [--preset tiny|sd15] [--device auto] [--frames 12] [--steps 40]
                              [--json bench/last_run.json]

Builds the preset with random weights (no downloads) and generates one clip per configuration:
- baseline:  fp32, ReferenceNet re-run at every step, guidance branches as separate backbone
             calls, the whole clip decoded in one VAE call;
- optimised: the defaults (ReferenceNet once per clip, batched guidance, chunked decode), in
             bf16 on a GPU (fp32 on a CPU, where bf16 is not faster);
- low-vram:  optimised + model offload between ReferenceNet, backbone and VAE (GPU only).
For each: seconds per generated frame, peak GPU memory, the share of time in ReferenceNet,
backbone, VAE and audio encoder, the backbone's achieved TFLOP/s (FLOPs counted by
torch.utils.flop_counter on one call) against the device's peak where known, and the largest
pixel difference from the baseline. On a CPU, only ratios between rows mean anything.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo.audio import AudioFeatures  # noqa: E402
from emo.model import EMOModel  # noqa: E402
from emo.pipeline import EMOPipeline, GenerationSettings  # noqa: E402

# Dense bf16 peak of known accelerators, TFLOP/s (vendor figures, no sparsity).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0,
                    "A10": 125.0, "L4": 121.0}


def device_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Wall time spent inside each network's forward (hooks, synchronised on GPUs)."""

    STAGES = {"reference_net": "ReferenceNet", "backbone": "backbone", "vae": "VAE", "audio_encoder": "audio"}

    def __init__(self, model: EMOModel, device: torch.device):
        self.device = device
        self.seconds = {label: 0.0 for label in self.STAGES.values()}
        self.calls = {label: 0 for label in self.STAGES.values()}
        self.handles = []
        for attr, label in self.STAGES.items():
            module = getattr(model, attr)
            targets = [module.decoder, module.encoder] if attr == "vae" else [module]
            for target in targets:
                self.handles.append(target.register_forward_pre_hook(self._start(label)))
                self.handles.append(target.register_forward_hook(self._stop(label)))
        self._started = {}

    def _start(self, label):
        def hook(module, args):
            synchronize(self.device)
            self._started[label] = time.perf_counter()
        return hook

    def _stop(self, label):
        def hook(module, args, output):
            synchronize(self.device)
            self.seconds[label] += time.perf_counter() - self._started.pop(label)
            self.calls[label] += 1
        return hook

    def close(self):
        for handle in self.handles:
            handle.remove()


def backbone_flops(pipe: EMOPipeline, settings: GenerationSettings, audio: AudioFeatures, image, mask) -> float:
    """FLOPs of one backbone call as the pipeline makes it (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode

    captured = {}
    backbone = pipe.model.backbone
    original = backbone.forward

    def capture(*args, **kwargs):
        captured.setdefault("call", (args, kwargs))
        return original(*args, **kwargs)

    backbone.forward = capture
    try:
        one_step = GenerationSettings(**{**settings.__dict__, "steps": 1})
        next(pipe.iter_clips(image, audio, face_mask=mask, settings=one_step))
    finally:
        backbone.forward = original
    args, kwargs = captured["call"]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        backbone(*args, **kwargs)
    return float(counter.get_total_flops())


def run_config(name, model, device, dtype, settings, audio, image, mask, offload=False, optimize=None):
    pipe = EMOPipeline(model, device=device, dtype=dtype, offload=offload).optimize(**(optimize or {}))
    flops = backbone_flops(pipe, settings, audio, image, mask)  # also warms up (and compiles)
    timer = StageTimer(pipe.model, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    frames = torch.cat(list(pipe.iter_clips(image, audio, face_mask=mask, settings=settings)))
    synchronize(device)
    total = time.perf_counter() - start
    timer.close()
    backbone_seconds = timer.seconds["backbone"]
    achieved = flops * timer.calls["backbone"] / backbone_seconds / 1e12 if backbone_seconds else float("nan")
    peak = device_peak(device)
    return frames, {
        "config": name,
        "dtype": str(dtype).replace("torch.", ""),
        "seconds_per_frame": total / frames.shape[0],
        "seconds_total": total,
        "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
        "share": {k: v / total for k, v in timer.seconds.items()},
        "backbone_calls": timer.calls["backbone"],
        "backbone_tflops": achieved,
        "backbone_percent_of_peak": (100 * achieved / peak) if peak else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, choices=("tiny", "sd15"),
                        help="default: sd15 on a GPU, tiny on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=12, help="frames to generate (one clip of f=12)")
    parser.add_argument("--steps", type=int, default=None, help="default 40 on a GPU, 4 on a CPU")
    parser.add_argument("--json", default="bench/last_run.json")
    parser.add_argument("--channels-last", action="store_true", help="add a row: optimised + channels_last")
    parser.add_argument("--compile", action="store_true", help="add a row: optimised + torch.compile")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    preset = args.preset or ("sd15" if gpu else "tiny")
    steps = args.steps or (40 if gpu else 4)
    torch.manual_seed(0)
    with torch.device(device):
        model = EMOModel.from_preset(preset, seed=0, device=device)
    config = model.config
    size = config.defaults.size
    fps = config.defaults.fps
    layers, width = config.audio.num_layers, config.audio.hidden_size
    generator = torch.Generator().manual_seed(1)
    audio = AudioFeatures(torch.randn(args.frames, layers, width, generator=generator), fps=fps,
                          waveform=torch.zeros(1, math.ceil(args.frames / fps * 16000)), sample_rate=16000)
    image = torch.rand(size, size, 3, generator=generator)
    mask = torch.zeros(size, size)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    base = GenerationSettings(steps=steps, frames_per_clip=12, motion_frames=4, seed=0)

    fast_dtype = torch.bfloat16 if gpu else torch.float32
    configs = [
        ("baseline", torch.float32, GenerationSettings(**{**base.__dict__, "reuse_reference": False,
                                                          "batch_guidance": False, "decode_chunk_size": 12}), False),
        ("optimised", fast_dtype, GenerationSettings(**{**base.__dict__, "decode_chunk_size": 4}), False),
    ]
    configs = [(*c, None) for c in configs]
    optimised = configs[1][2]
    if args.channels_last:
        configs.append(("+chan-last", fast_dtype, optimised, False, {"channels_last": True}))
    if args.compile:
        configs.append(("+compile", fast_dtype, optimised, False, {"compile": True}))
    if gpu:
        configs.append(("low-vram", fast_dtype, GenerationSettings(**{**base.__dict__, "decode_chunk_size": 2}),
                        True, None))

    rows, reference = [], None
    for name, dtype, settings, offload, optimize in configs:
        # Offloading and compiling change the model object: give them their own copy.
        fresh = offload or bool(optimize)
        frames, row = run_config(name, copy.deepcopy(model) if fresh else model, device, dtype,
                                 settings, audio, image, mask, offload, optimize)
        reference = frames if reference is None else reference
        row["max_pixel_diff_vs_baseline"] = float((frames - reference).abs().max())
        rows.append(row)
        model = model.float()

    header = (f"EMO benchmark: preset={preset} device={torch.cuda.get_device_name(device) if gpu else 'cpu'} "
              f"frames={args.frames} steps={steps} size={size}")
    print(header)
    print(f"{'config':10} {'dtype':9} {'s/frame':>9} {'speedup':>8} {'peak GiB':>9} {'refnet':>7} "
          f"{'backbone':>9} {'vae':>6} {'audio':>6} {'TFLOP/s':>8} {'%peak':>6} {'max diff':>9}")
    for row in rows:
        share = row["share"]
        print(f"{row['config']:10} {row['dtype']:9} {row['seconds_per_frame']:9.3f} "
              f"{rows[0]['seconds_per_frame'] / row['seconds_per_frame']:7.2f}x "
              f"{row['peak_gpu_memory_gib'] if row['peak_gpu_memory_gib'] is not None else float('nan'):9.2f} "
              f"{share['ReferenceNet']:6.0%} {share['backbone']:8.0%} {share['VAE']:6.0%} {share['audio']:6.0%} "
              f"{row['backbone_tflops']:8.3g} "
              f"{row['backbone_percent_of_peak'] if row['backbone_percent_of_peak'] is not None else float('nan'):6.1f} "
              f"{row['max_pixel_diff_vs_baseline']:9.2e}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": header, "preset": preset, "device": str(device),
                               "gpu": torch.cuda.get_device_name(device) if gpu else None,
                               "frames": args.frames, "steps": steps, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
