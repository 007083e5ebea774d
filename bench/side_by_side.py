"""What both sides of `bench/vs_hallo.py` share: the random weights, the architecture, the clock
and the memory gauge. Imports torch only, so Hallo's worker (in Hallo's own environment,
without `emo`) and ours use the very same code.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from pathlib import Path

import torch

# The networks as Hallo's scripts/inference.py builds them. "sd15": Stable Diffusion 1.5's UNet
# config (runwayml/stable-diffusion-v1-5 unet/config.json) with Hallo's configs/inference/
# default.yaml `unet_additional_kwargs`, FaceLocator(320), ImageProjModel(768, 512, 4) and
# AudioProjModel(5, 12, 768, 512, 768, 32). "tiny": the same structure, narrow, for quick checks.
ARCHS = {
    "sd15": {
        "unet": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
                 "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32},
        "motion_heads": 8, "audio_attention_dim": 768,
        "face_locator": {"conditioning_channels": 3, "block_out_channels": [16, 32, 64, 128]},
        "imageproj": {"clip_embeddings_dim": 512, "clip_extra_context_tokens": 4},
        "audioproj": {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512,
                      "output_dim": 768, "context_tokens": 32},
    },
    "tiny": {
        "unet": {"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1,
                 "attention_head_dim": 2, "cross_attention_dim": 16, "norm_num_groups": 8},
        "motion_heads": 2, "audio_attention_dim": 24,
        "face_locator": {"conditioning_channels": 3, "block_out_channels": [4, 8, 16, 32]},
        "imageproj": {"clip_embeddings_dim": 32, "clip_extra_context_tokens": 4},
        "audioproj": {"seq_len": 5, "blocks": 3, "channels": 16, "intermediate_dim": 32,
                      "output_dim": 24, "context_tokens": 4},
    },
}

SD15_UNET_BASE = {
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "out_channels": 4, "mid_block_scale_factor": 1,
    "norm_eps": 1e-5, "sample_size": 64,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}


def unet_config(arch: dict) -> dict:
    """The diffusers UNet config dict of an architecture (2-D block names, as SD1.5's file)."""
    return {**SD15_UNET_BASE, **arch["unet"]}


def hallo_additional_kwargs(arch: dict) -> dict:
    """Hallo's configs/inference/default.yaml `unet_additional_kwargs`, head count and audio width
    taken from the architecture."""
    return {
        "use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False,
        "unet_use_temporal_attention": False, "use_motion_module": True, "use_audio_module": True,
        "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
        "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
        "motion_module_kwargs": {"num_attention_heads": arch["motion_heads"], "num_transformer_block": 1,
                                 "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                 "temporal_position_encoding": True,
                                 "temporal_position_encoding_max_len": 32,
                                 "temporal_attention_dim_div": 1},
        "audio_attention_dim": arch["audio_attention_dim"],
        "stack_enable_blocks_name": ["up", "down", "mid"], "stack_enable_blocks_depth": [0, 1, 2, 3],
    }


# Hallo's DDIM settings (default.yaml noise_scheduler_kwargs with enable_zero_snr).
HALLO_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "clip_sample": False,
                   "steps_offset": 1, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                   "timestep_spacing": "trailing"}


def random_weight(key: str, shape, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """The value of one `net.pth` entry, the same in both processes: seeded by its name.

    Weights N(0, 1/fan_in) (every layer active, activations of order 1 at any width), 1-D
    weights (norms) 1 + 0.1 N, biases 0.05 N, so no zero-initialised layer stays a no-op; the
    temporal position tables are the sinusoid AnimateDiff stores. float32, drawn on `device`
    (a GPU draws its 2.4 B values in a blink; the values depend on the device type).
    """
    shape = tuple(shape)
    if key.endswith("pos_encoder.pe"):
        return sinusoid(shape[1], shape[2]).to(device)
    generator = torch.Generator(device=device).manual_seed((zlib.crc32(key.encode()) + seed) % 2**63)
    noise = torch.randn(shape, generator=generator, device=device)
    if key.endswith("bias"):
        return noise * 0.05
    if len(shape) == 1:
        return 1.0 + 0.1 * noise
    return noise / math.sqrt(math.prod(shape[1:]))


def sinusoid(length: int, channels: int) -> torch.Tensor:
    """[1, length, channels]: sin at even channels, cos at odd ones (AnimateDiff's `pe`). The
    same table as emo.models.temporal.sinusoidal_table, restated because Hallo's worker imports
    this module in Hallo's own environment, where our library must not be imported."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


def parse_dtype(name: str) -> torch.dtype:
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"vs_hallo: unknown dtype {name!r}; use one of {', '.join(dtypes)}.")
    return dtypes[name]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall seconds, synchronised with the device at each reading."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


class PeakMemory:
    """Peak memory of the work after `reset()`, in MB: CUDA `max_memory_allocated`, or on a CPU
    the process's peak resident set (VmHWM, reset through /proc/self/clear_refs so that the
    weights' loading does not count, only what the work keeps resident)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("vs_hallo: /proc/self/status has no VmHWM line; peak memory needs Linux.")


class Profile:
    """`torch.profiler` around one side's measured clip when the job asks for it (`--profile`):
    writes DIR/profile_<side>.txt, the operators by self time (the top 40, and the same grouped by
    input shapes), so that the two sides' costs can be compared operator by operator."""

    def __init__(self, job: dict, workdir, side: str):
        self.enabled, self.path = bool(job.get("profile")), Path(workdir) / f"profile_{side}.txt"
        self._profiler = None

    def __enter__(self):
        if self.enabled:
            self._profiler = torch.profiler.profile(record_shapes=True)
            self._profiler.__enter__()
        return self

    def __exit__(self, *exc):
        if self._profiler is None:
            return False
        self._profiler.__exit__(*exc)
        sort = "self_cuda_time_total" if self._profiler.use_device == "cuda" else "self_cpu_time_total"
        events = self._profiler.key_averages()
        shaped = self._profiler.key_averages(group_by_input_shape=True)
        self.path.write_text(events.table(sort_by=sort, row_limit=40) + "\n\n"
                             + shaped.table(sort_by=sort, row_limit=40, max_name_column_width=40,
                                            max_shapes_column_width=120))
        return False


def load_average() -> float:
    """The machine's 1-minute load average (runnable threads), to say how shared a CPU run was."""
    return round(os.getloadavg()[0], 2)


def set_threads() -> None:
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def write_json(path, value: dict) -> None:
    Path(path).write_text(json.dumps(value, indent=1))
