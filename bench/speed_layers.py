"""Speed layers before/after: per-pixel keys and values (the old formulation) vs once per video.

    python bench/speed_layers.py [--size 512] [--frames 16] [--motion 2] [--repeat 3] [--json PATH]

1. FLOPs of one sd15 backbone call on the [uncond, cond] batch (counted by
   torch.utils.flop_counter on the meta device, so nothing is computed): old vs new.
2. Wall time and peak resident memory of one temporal module at the backbone's first level
   (320 channels, size/8 latent side) on the CPU, fp32, old vs new, speed layers random (active).
3. The same on the tiny preset's whole backbone (64 px).
The old formulation is `tests/emo/test_speed_layers.py`'s: the speed tokens copied to every pixel
and diffusers' own attention on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import PeakMemory  # noqa: E402

from emo.config import EMOConfig  # noqa: E402
from emo.model import EMOModel  # noqa: E402
from emo.models import temporal  # noqa: E402


def per_pixel_speed_attention(attn, x, speed):
    """The formulation before the fix (speed tokens repeated over the pixels)."""
    return attn(x, encoder_hidden_states=speed.repeat_interleave(x.shape[0] // speed.shape[0], dim=0))


@contextlib.contextmanager
def formulation(name: str):
    original = temporal.speed_cross_attention
    if name == "old":
        temporal.speed_cross_attention = per_pixel_speed_attention
    try:
        yield
    finally:
        temporal.speed_cross_attention = original


def backbone_flops(preset: str, size: int, frames: int, motion: int) -> dict:
    """TFLOP of one backbone call with guidance (batch 2), old and new, on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = EMOModel(EMOConfig.preset(preset)).eval()
    cfg, side = model.config, size // 8
    with torch.device("meta"), torch.no_grad():
        reference = model.reference_net(torch.randn(1, 1 + motion, 4, side, side))
        args = (torch.randn(2, 4, frames, side, side), 500,
                torch.randn(2, frames, cfg.audio.num_tokens, model.family.audio_token_dim(cfg)))
        kwargs = {"reference": reference, "speed": torch.randn(1, motion + frames, cfg.speed.embed_dim),
                  "face_features": torch.randn(2, cfg.unet.block_out_channels[0], side, side)}
        out = {}
        for name in ("old", "new"):
            with formulation(name), FlopCounterMode(display=False) as counter:
                model.backbone(*args, **kwargs)
            out[name] = counter.get_total_flops() / 1e12
    return out


def time_and_peak(fn, repeat: int) -> tuple[float, float]:
    """Median seconds of `repeat` calls and the peak resident MB above the start."""
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    base = memory.peak_mb()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak_mb() - base


def randomize_zero_layers(module: torch.nn.Module) -> None:
    """Give the zero-initialised layers (speed output, temporal output) values, so they count."""
    with torch.no_grad():
        for param in module.parameters():
            if torch.count_nonzero(param) == 0:
                param.normal_(0, 0.02)


def motion_module_cost(size: int, frames: int, motion: int, repeat: int) -> dict:
    """One sd15 first-level temporal module (320 channels), batch 2, old vs new."""
    cfg = EMOConfig.preset("sd15")
    torch.manual_seed(0)
    module = temporal.MotionModule(320, cfg.temporal, cfg.speed.embed_dim).eval()
    randomize_zero_layers(module)
    side = size // 8
    hidden = torch.randn(2 * frames, 320, side, side)
    motion_features = torch.randn(1, motion, 320, side, side)
    speed = torch.randn(1, motion + frames, cfg.speed.embed_dim)
    out, results = {}, {}
    for name in ("old", "new", "old", "new"):  # twice each, interleaved; the second pair counts
        with formulation(name), torch.no_grad():
            seconds, peak = time_and_peak(lambda: out.__setitem__(name, module(hidden, frames, motion_features,
                                                                                  speed)), repeat)
        results[name] = {"seconds": seconds, "peak_mb": peak}
    results["max_abs_diff"] = float((out["old"] - out["new"]).abs().max())
    return results


def tiny_backbone_cost(repeat: int) -> dict:
    from tests.helpers import randomize_

    model = randomize_(EMOModel.from_preset("tiny", seed=0)).eval()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from graph_breaks import pipeline_calls

    args, kwargs = pipeline_calls(model, frames=12)["backbone"]
    out, results = {}, {}
    for name in ("old", "new", "old", "new"):
        with formulation(name), torch.no_grad():
            seconds, peak = time_and_peak(lambda: out.__setitem__(name, model.backbone(*args, **kwargs)), repeat)
        results[name] = {"seconds": seconds, "peak_mb": peak}
    results["max_abs_diff"] = float((out["old"] - out["new"]).abs().max())
    return results


def main(argv=None) -> int:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # Large blocks straight from and back to the OS, so each variant's peak resident memory
        # is its own and not hidden by the heap the previous one left behind.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--motion", type=int, default=2)
    parser.add_argument("--module-size", type=int, default=256, help="pixels for the timed temporal module")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    report = {
        "sd15_backbone_tflop": backbone_flops("sd15", args.size, args.frames, args.motion),
        "temporal_module": motion_module_cost(args.module_size, args.frames, args.motion, args.repeat),
        "tiny_backbone": tiny_backbone_cost(args.repeat),
        "threads": torch.get_num_threads(),
    }
    flops = report["sd15_backbone_tflop"]
    print(f"sd15 backbone, {args.size} px, {args.frames}+{args.motion} frames, batch 2: "
          f"{flops['old']:.2f} -> {flops['new']:.2f} TFLOP ({flops['old'] - flops['new']:.2f} saved)")
    for name in ("temporal_module", "tiny_backbone"):
        r = report[name]
        print(f"{name}: {r['old']['seconds']:.3f} s, {r['old']['peak_mb']:.0f} MB -> "
              f"{r['new']['seconds']:.3f} s, {r['new']['peak_mb']:.0f} MB (max |diff| {r['max_abs_diff']:.1e})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
