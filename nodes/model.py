"""EMOModelLoader: an EMO checkpoint from models/emo -> EMO_MODEL."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emo.checkpoints import CheckpointError, load_checkpoint
from emo.models import EMOModel
from emo.pipeline import EMOPipeline

from . import comfy_services as services

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(eq=False)
class EMOModelHandle:
    """What flows through an EMO_MODEL link: the loaded networks and where they run."""

    model: EMOModel
    name: str  # checkpoint name as listed in the loader
    load_device: torch.device  # where it computes
    offload_device: torch.device  # where it waits between runs when memory is short
    dtype: torch.dtype
    path: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def defaults(self):
        """What the checkpoint was trained for (size, fps, frames_per_clip, ...)."""
        return self.model.config.defaults

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])

    @contextlib.contextmanager
    def loaded(self):
        """Use the model on its compute device: make room first (ComfyUI unloads its own models
        if needed), and move it back to the offload device afterwards if memory is short."""
        device = self.load_device
        if self.model.device != device:
            services.make_room(device, int(self.size_bytes() * 1.3))
            logger.info("EMO: moving %s to %s", self.name, device)
            self.model.to(device)
        try:
            yield EMOPipeline(self.model)
        finally:
            self._offload_if_short(device)

    def _offload_if_short(self, device: torch.device) -> None:
        if device == self.offload_device or device.type == "cpu":
            return
        free = services.free_memory(device)
        if free is not None and free < self.size_bytes():
            logger.info("EMO: offloading %s to %s (%.1f GiB free on %s)", self.name, self.offload_device,
                        free / 2**30, device)
            self.model.to(self.offload_device)
            services.empty_cache()


def load_model(ckpt_name: str, precision: str = "auto") -> EMOModelHandle:
    """Load a checkpoint by name from the EMO model folders (the loader node's body)."""
    if precision not in PRECISIONS:
        raise ValueError(f"EMOModelLoader: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    path = services.resolve_checkpoint(ckpt_name)
    device = services.torch_device()
    dtype = services.pick_dtype(precision, device)
    offload = services.offload_device()
    services.make_room(device, path.stat().st_size * 2)
    try:
        # Weights go straight to the compute device; the GPU copy is the only one kept.
        model = load_checkpoint(path, device=device, dtype=dtype)
    except CheckpointError as error:
        raise ValueError(f"EMOModelLoader: {error}") from error
    logger.info("EMOModelLoader: loaded %s (%s) on %s as %s", ckpt_name, model.config.name, device, dtype)
    return EMOModelHandle(model=model, name=ckpt_name, load_device=device, offload_device=offload,
                          dtype=dtype, path=path)


class EMOModelLoader:
    DESCRIPTION = (
        "Loads an EMO checkpoint (one .safetensors file holding the ReferenceNet, backbone UNet, "
        "temporal and speed layers, face locator, audio projection, VAE and wav2vec2) from "
        "ComfyUI/models/emo or an 'emo:' folder in extra_model_paths.yaml. ComfyUI keeps it "
        "loaded while the inputs stay the same."
    )
    CATEGORY = "EMO"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded EMO model: connect it to AudioEncode and EMOSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (services.list_checkpoints(), {
                    "tooltip": "EMO checkpoint file in ComfyUI/models/emo (or an 'emo:' folder of "
                               "extra_model_paths.yaml). Refresh the page after adding files.",
                }),
                "precision": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: fp32 on the CPU, bf16 on GPUs that support it, "
                               "else fp16. fp16/bf16 halve the memory.",
                }),
            },
        }

    def load(self, ckpt_name: str, precision: str = "auto"):
        return (load_model(ckpt_name, precision),)
