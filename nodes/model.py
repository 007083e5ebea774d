"""Model loaders -> EMO_MODEL:

- EMOModelLoader: an EMO checkpoint from models/emo;
- EMOComponentLoader: a new EMO model built from SD1.5, VAE, wav2vec2 and AnimateDiff files
  (`emo.weights.assemble`; a starting point for training, not a lip-syncing model);
- EMOHalloLoader: Hallo's released net.pth + VAE + wav2vec2, run in Hallo mode
  (`emo.families.hallo.convert`);
- EMOEchoMimicLoader: EchoMimic's unchanged pretrained_weights folder from models/echomimic, V1 or
  acc (`emo.families.echomimic.convert`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..emo.checkpoints import CheckpointError, load_checkpoint
from ..emo.config import EMOConfig
from ..emo.model import EMOModel
from ..emo.pipeline import EMOPipeline
from ..emo.weights.assemble import assemble
from ..emo.families.hallo.convert import convert_hallo_file
from ..emo.families.echomimic import convert as echomimic_convert
from ..emo.families.hallo.lineage import variant as hallo_variant
from ..emo.families.hallo.options import HalloOptions

from . import comfy_services as services

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF
# The model folders the loaders list (ComfyUI keys). AnimateDiff-Evolved registers
# 'animatediff_models' for motion modules (animatediff/utils_model.py, Folders.ANIMATEDIFF_MODELS).
CHECKPOINTS, VAES, AUDIO_ENCODERS, MOTION_MODULES = "checkpoints", "vae", "audio_encoders", "animatediff_models"
VAE_FROM_CHECKPOINT = "(from the SD1.5 checkpoint)"
NO_MOTION_MODULE = "none"


@dataclass(eq=False)
class EMOModelHandle:
    """What flows through an EMO_MODEL link: the loaded networks and where they run.

    Inside ComfyUI the model is handed to ComfyUI's model management as a ModelPatcher: it is
    loaded onto the GPU by `comfy.model_management.load_models_gpu` (which first unloads other
    models if memory is short), "Unload Models" and other models' loads move it back to the
    offload device, and in --lowvram/--novram mode (or when it cannot fit) its large networks
    stay on the offload device and move in one at a time while they run.
    """

    model: EMOModel
    name: str  # checkpoint name as listed in the loader
    load_device: torch.device  # where it computes
    offload_device: torch.device  # where it waits between runs when memory is short
    dtype: torch.dtype
    path: Path | None = None
    info: dict = field(default_factory=dict)
    patcher: object = None  # ComfyUI's ModelPatcher (None outside ComfyUI)

    def __post_init__(self) -> None:
        if self.patcher is None:
            self.patcher = services.model_patcher(self.model, self.load_device, self.offload_device)

    @property
    def defaults(self):
        """What the checkpoint was trained for (size, fps, frames_per_clip, ...)."""
        return self.model.config.defaults

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])

    def largest_network_bytes(self) -> int:
        """The largest network the pipeline moves in on its own in low-VRAM mode."""
        sizes = [sum(t.numel() * t.element_size() for t in getattr(self.model, name).parameters())
                 for name in EMOPipeline.OFFLOADED]
        small = self.size_bytes() - sum(sizes)  # the networks that stay on the device
        return max(sizes) + small

    def activation_bytes(self, size: int | None = None, frames: int | None = None) -> int:
        """A generous estimate of the memory one clip's denoising needs beyond the weights: the
        widest feature maps of the backbone for both guidance rows, with room for attention and
        the VAE decode (measured peaks of bench/benchmark.py at 512 px sit below it)."""
        defaults = self.defaults
        size = size or defaults.size
        frames = frames or defaults.frames_per_clip
        width = self.model.config.unet.block_out_channels[0]
        cells = (size // self.model.config.latent_scale) ** 2
        return 2 * frames * cells * width * self.dtype.itemsize * 48

    @contextlib.contextmanager
    def loaded(self, size: int | None = None, frames: int | None = None):
        """The model as an EMOPipeline on its compute device for one run."""
        device = self.load_device
        needed = self.activation_bytes(size, frames)
        total = services.total_memory(device) if device.type != "cpu" else None
        fits = total is None or self.size_bytes() + needed < 0.9 * total
        if device.type != "cpu" and (services.low_vram() or not fits):
            yield self._offloaded_pipeline(device, needed)
            return
        if self.patcher is not None:
            services.load_through_comfyui(self.patcher, needed)
        elif self.model.device != device:
            services.make_room(device, int(self.size_bytes() * 1.3))
            logger.info("EMO: moving %s to %s", self.name, device)
            self.model.to(device)
        try:
            yield EMOPipeline(self.model)
        finally:
            if self.patcher is None:
                self._offload_if_short(device)

    def _offloaded_pipeline(self, device: torch.device, needed: int) -> EMOPipeline:
        logger.info("EMO: low VRAM: %s runs with its networks moved in one at a time", self.name)
        if self.patcher is not None and self.model.device == device:
            self.patcher.detach()  # loaded by an earlier run: back to the offload device first
        services.make_room(device, self.largest_network_bytes() + needed)
        return EMOPipeline(self.model, device=device, offload=True)

    def _offload_if_short(self, device: torch.device) -> None:
        if device == self.offload_device or device.type == "cpu":
            return
        free = services.free_memory(device)
        if free is not None and free < self.size_bytes():
            logger.info("EMO: offloading %s to %s (%.1f GiB free on %s)", self.name, self.offload_device,
                        free / 2**30, device)
            self.model.to(self.offload_device)
            services.empty_cache()


def _check_precision(node: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"{node}: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def _on_device(node: str, model: EMOModel, name: str, dtype: torch.dtype, device: torch.device,
               info: dict) -> EMOModelHandle:
    """A model built on the CPU -> a handle for running it on `device` in `dtype` (it moves there
    for its first run, through ComfyUI's model management)."""
    model.to(dtype=dtype)
    handle = EMOModelHandle(model=model, name=name, load_device=device, offload_device=services.offload_device(),
                            dtype=dtype, info=info)
    logger.info("%s: %s (%s) on %s as %s", node, name, model.config.name, device, dtype)
    return handle


def load_model(ckpt_name: str, precision: str = "auto") -> EMOModelHandle:
    """Load a checkpoint by name from the EMO model folders (the loader node's body)."""
    _check_precision("EMO Load Checkpoint", precision)
    path = services.resolve_checkpoint(ckpt_name)
    device = services.torch_device()
    dtype = services.pick_dtype(precision, device)
    offload = services.offload_device()
    try:
        # Loaded onto the offload device; the first run moves it in through ComfyUI's model
        # management, which makes room first.
        model = load_checkpoint(path, device=offload, dtype=dtype)
    except CheckpointError as error:
        raise ValueError(f"EMO Load Checkpoint: {error}") from error
    logger.info("EMO Load Checkpoint: loaded %s (%s) for %s as %s", ckpt_name, model.config.name, device, dtype)
    return EMOModelHandle(model=model, name=ckpt_name, load_device=device, offload_device=offload,
                          dtype=dtype, path=path)


class EMOModelLoader:
    DESCRIPTION = (
        "Loads an EMO checkpoint (one .safetensors file holding the ReferenceNet, backbone UNet, "
        "temporal and speed layers, face locator, audio projection, VAE and wav2vec2) from "
        "ComfyUI/models/emo or an 'emo:' folder in extra_model_paths.yaml; Hallo's and EchoMimic's "
        "weights converted with `python -m emo convert` load here too, with their own settings. "
        "ComfyUI keeps it loaded while the inputs stay the same."
    )
    CATEGORY = "EMO/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded EMO model: connect it to EMO Audio Encode and EMO Sampler.",)

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


# ---- EMOComponentLoader ---------------------------------------------------------------------------
COMPONENT_NODE = "EMO Build From SD1.5 Parts"
NEW_LAYERS_WARNING = (
    "the audio projection, speed and face-locator layers (and the temporal layers a motion module does "
    "not provide) are freshly initialised: this model is a starting point for training, or for testing "
    "a graph; it does not lip-sync"
)


def build_from_components(ckpt_name: str, vae_name: str, wav2vec2_name: str, motion_module_name: str,
                          precision: str = "auto", seed: int = 0, *, preset: str | EMOConfig = "sd15"
                          ) -> EMOModelHandle:
    """EMOComponentLoader's body: assemble an EMO model (architecture `preset`; tests pass 'tiny')
    from files in ComfyUI's checkpoints / vae / audio_encoders / animatediff_models folders."""
    _check_precision(COMPONENT_NODE, precision)
    sd15 = services.resolve_model_file(CHECKPOINTS, ckpt_name, COMPONENT_NODE)
    vae = None if vae_name == VAE_FROM_CHECKPOINT else services.resolve_model_file(VAES, vae_name, COMPONENT_NODE)
    wav2vec2 = services.resolve_model_file(AUDIO_ENCODERS, wav2vec2_name, COMPONENT_NODE)
    motion = (None if motion_module_name == NO_MOTION_MODULE
              else services.resolve_model_file(MOTION_MODULES, motion_module_name, COMPONENT_NODE))
    device = services.torch_device()
    dtype = services.pick_dtype(precision, device)
    try:
        # Built on the CPU in the target dtype (a full-size model is ~9 GB in fp32), then moved.
        model, report = assemble(preset, sd15=sd15, vae=vae, wav2vec2=wav2vec2, motion_module=motion, seed=seed,
                                 dtype=dtype)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{COMPONENT_NODE}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{COMPONENT_NODE}: {error}") from error
    logger.warning("%s: %s", COMPONENT_NODE, NEW_LAYERS_WARNING)
    info = {"mode": "assembled", "sources": {k: str(v) for k, v in report.sources.items()},
            "notes": list(report.notes), "warnings": list(report.warnings), "seed": seed}
    return _on_device(COMPONENT_NODE, model, f"EMO from {sd15.name}", dtype, device, info)


class EMOComponentLoader:
    DESCRIPTION = (
        "Builds an EMO model inside ComfyUI from files you already have: an SD1.5 checkpoint (its UNet "
        "becomes the ReferenceNet and the backbone), a VAE, wav2vec2 and optionally an AnimateDiff "
        "motion module. The audio projection, speed and face-locator layers are freshly initialised, "
        "so this model is a starting point for training (or for testing a graph), not a lip-syncing "
        "model: its videos will not follow the voice. For talking videos load a trained checkpoint "
        "with EMO Load Checkpoint, or Hallo's weights with EMO Load Hallo."
    )
    CATEGORY = "EMO/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("An untrained EMO model (pretrained parts, new audio/speed/face layers).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (services.list_model_files(CHECKPOINTS), {
                    "tooltip": "An SD1.5 checkpoint from ComfyUI/models/checkpoints (e.g. "
                               "v1-5-pruned-emaonly.safetensors); its UNet fills the ReferenceNet and "
                               "the backbone.",
                }),
                "vae_name": ([VAE_FROM_CHECKPOINT, *services.list_model_files(VAES, hf_folders=True)], {
                    "default": VAE_FROM_CHECKPOINT,
                    "tooltip": "A VAE from ComfyUI/models/vae (e.g. vae-ft-mse-840000-ema-pruned), or the "
                               "one inside the SD1.5 checkpoint.",
                }),
                "wav2vec2_name": (services.list_model_files(AUDIO_ENCODERS, hf_folders=True), {
                    "tooltip": "wav2vec2-base-960h from ComfyUI/models/audio_encoders: a single weights "
                               "file, or a Hugging Face folder (config.json + weights, listed as 'name/').",
                }),
                "motion_module_name": ([NO_MOTION_MODULE, *services.list_model_files(MOTION_MODULES)], {
                    "default": NO_MOTION_MODULE,
                    "tooltip": "An AnimateDiff SD1.5 motion module (mm_sd_v15_v2.ckpt, ...) from "
                               "ComfyUI/models/animatediff_models; none: new temporal layers that "
                               "start as a no-op.",
                }),
                "precision": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: fp32 on the CPU, bf16 on GPUs that support it, "
                               "else fp16.",
                }),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": False,
                    "tooltip": "Seed of the new layers' initialisation; keep it fixed so ComfyUI reuses "
                               "the built model.",
                }),
            },
        }

    def load(self, ckpt_name, vae_name, wav2vec2_name, motion_module_name, precision="auto", seed=0):
        return (build_from_components(ckpt_name, vae_name, wav2vec2_name, motion_module_name, precision, seed),)


# ---- EMOHalloLoader --------------------------------------------------------------------------------
HALLO_NODE = "EMO Load Hallo"
NO_HALLO_DIR = "none"  # hallo_dir: use the three files chosen above
FROM_HALLO_DIR = "(from hallo_dir)"  # net/vae/wav2vec2 widgets when a hallo_dir is chosen
IDENTITY_CHOICES = ("on", "off")


def list_hallo_dirs() -> list[str]:
    """Hallo pretrained_models folders under the hallo model folders: every subfolder (or the
    folder itself, listed as '.') that holds hallo/net.pth (Hallo2: hallo2/, JoyHallo: joyhallo/)."""
    from ..emo.families.hallo.lineage import VARIANTS

    def holds_net(path: Path) -> bool:  # hallo/net.pth, hallo2/net.pth or joyhallo/net.pth
        return any((path / v.net_path).is_file() for v in VARIANTS.values())

    names = set()
    for folder in services.model_folders(services.HALLO_FOLDER):
        if holds_net(folder):
            names.add(".")
        if folder.is_dir():
            names.update(child.name for child in folder.iterdir() if child.is_dir() and holds_net(child))
    return sorted(names)


def resolve_hallo_dir(name: str) -> Path:
    relative = Path(os.path.normpath("/" + name)).relative_to("/")  # no escaping the folder
    folders = services.model_folders(services.HALLO_FOLDER)
    for folder in folders:
        if (folder / relative).is_dir():
            return folder / relative
    raise FileNotFoundError(f"{HALLO_NODE}: no Hallo folder {name!r} in the hallo model folders "
                            f"({', '.join(str(f) for f in folders) or '(none)'}); copy Hallo's pretrained_models "
                            "folder into ComfyUI/models/hallo/ and refresh the page")


def _face_analysis_beside(net: Path) -> Path | None:
    """Hallo's face_analysis folder for a net.pth picked on its own: beside its hallo/ folder
    (an unchanged pretrained_models copy), else at the top of a hallo model folder."""
    candidates = [net.parent.parent / "face_analysis"]
    candidates += [folder / "face_analysis" for folder in services.model_folders(services.HALLO_FOLDER)]
    return next((c for c in candidates if c.is_dir()), None)


def load_hallo(net_name: str, vae_name: str, wav2vec2_name: str, precision: str = "auto", *,
               config: EMOConfig | None = None, hallo_dir: str = NO_HALLO_DIR, identity: str = "on",
               temporal_heads: int | None = None) -> EMOModelHandle:
    """EMOHalloLoader's body: a Hallo pretrained_models folder from models/hallo (`hallo_dir`), or
    Hallo's net.pth from models/hallo + VAE + wav2vec2, -> a model in Hallo mode with its identity
    source (face_analysis; identity "off" is the user's choice). `config` / `temporal_heads`: the
    architecture (default Hallo's released one; tests pass a tiny one)."""
    from ..emo.families.hallo.folder import HALLO_TEMPORAL_HEADS, load_hallo_folder
    from ..emo.families.hallo.portrait import attach_identity

    _check_precision(HALLO_NODE, precision)
    if identity not in IDENTITY_CHOICES:
        raise ValueError(f"{HALLO_NODE}: identity must be 'on' or 'off', got {identity!r}")
    device = services.torch_device()
    dtype = services.pick_dtype(precision, device)
    try:
        if hallo_dir != NO_HALLO_DIR:
            root = resolve_hallo_dir(hallo_dir)
            model, folder = load_hallo_folder(root, identity=identity == "on", dtype=dtype, option=HALLO_NODE,
                                              temporal_heads=temporal_heads or HALLO_TEMPORAL_HEADS)
            info = {"mode": "hallo", "sources": {"hallo_dir": str(root)}}
            return _on_device(HALLO_NODE, model, f"Hallo {root.name}", dtype, device, info)
        if FROM_HALLO_DIR in (net_name, vae_name, wav2vec2_name):
            raise ValueError(f"{HALLO_NODE}: {FROM_HALLO_DIR} is chosen but hallo_dir is none; pick the Hallo "
                             "folder in hallo_dir, or pick net.pth, the VAE and wav2vec2")
        net = services.resolve_model_file(services.HALLO_FOLDER, net_name, HALLO_NODE)
        vae = services.resolve_model_file(VAES, vae_name, HALLO_NODE)
        wav2vec2 = services.resolve_model_file(AUDIO_ENCODERS, wav2vec2_name, HALLO_NODE)
        face = _face_analysis_beside(net)
        if identity == "on" and face is None:
            raise FileNotFoundError(
                f"{HALLO_NODE}: no face_analysis folder for Hallo's identity; put Hallo's pretrained_models/"
                "face_analysis (models/scrfd_10g_bnkps.onnx, glintr100.onnx, 2d106det.onnx) in ComfyUI/models/hallo/, "
                "pick a whole Hallo folder in hallo_dir, or set identity off")
        model = convert_hallo_file(str(net), vae=vae, wav2vec2=wav2vec2, config=config, dtype=dtype)
        attach_identity(model, face, identity=identity == "on")
    except FileNotFoundError as error:
        raise FileNotFoundError(_prefixed(error)) from error
    except ValueError as error:
        raise ValueError(_prefixed(error)) from error
    release = hallo_variant(HalloOptions.from_dict(model.config.family_options).variant)  # Hallo, Hallo2, JoyHallo
    info = {"mode": "hallo", "variant": release.name,
            "sources": {"net": str(net), "vae": str(vae), "wav2vec2": str(wav2vec2)}}
    return _on_device(HALLO_NODE, model, f"{release.title} {net.name}", dtype, device, info)


def _prefixed(error: Exception) -> str:
    text = str(error)
    return text if text.startswith(HALLO_NODE) else f"{HALLO_NODE}: {text}"


class EMOHalloLoader:
    DESCRIPTION = (
        "Loads Hallo's released weights (fudan-generative-vision/hallo, MIT) in Hallo mode: pick your unchanged "
        "pretrained_models folder (copied into ComfyUI/models/hallo/) in hallo_dir, or net.pth + the VAE "
        "(sd-vae-ft-mse) + wav2vec2-base-960h one by one. Identity comes from the folder's face_analysis "
        "(insightface antelopev2: scrfd_10g_bnkps.onnx, glintr100.onnx) and the face/lip masks from its "
        "landmarks, as in Hallo; the audio goes through Hallo's own front end. Converting is slow; converting "
        "once with `python -m emo convert --from hallo ...` into ComfyUI/models/emo loads faster."
    )
    CATEGORY = "EMO/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("Hallo as an EMO model (Hallo mode): connect it to EMO Audio Encode and EMO Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "net_name": ([FROM_HALLO_DIR, *services.list_model_files(services.HALLO_FOLDER)], {
                    "tooltip": "Hallo's net.pth (pretrained_models/hallo/net.pth) in ComfyUI/models/hallo "
                               "(or a 'hallo:' folder of extra_model_paths.yaml); '(from hallo_dir)' with a "
                               "hallo_dir.",
                }),
                "vae_name": ([FROM_HALLO_DIR, *services.list_model_files(VAES, hf_folders=True)], {
                    "tooltip": "The VAE Hallo uses, sd-vae-ft-mse, from ComfyUI/models/vae (a file or a "
                               "diffusers folder); '(from hallo_dir)' with a hallo_dir.",
                }),
                "wav2vec2_name": ([FROM_HALLO_DIR, *services.list_model_files(AUDIO_ENCODERS, hf_folders=True)], {
                    "tooltip": "wav2vec2-base-960h from ComfyUI/models/audio_encoders: a single weights "
                               "file, or a Hugging Face folder (config.json + weights, listed as 'name/'); "
                               "'(from hallo_dir)' with a hallo_dir.",
                }),
                "precision": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: fp32 on the CPU, bf16 on GPUs that support it, "
                               "else fp16.",
                }),
            },
            "optional": {
                "hallo_dir": ([NO_HALLO_DIR, *list_hallo_dirs()], {
                    "default": NO_HALLO_DIR,
                    "tooltip": "Hallo's whole pretrained_models folder, copied unchanged into ComfyUI/models/hallo/ "
                               "(hallo/net.pth, sd-vae-ft-mse, wav2vec, face_analysis, audio_separator, "
                               "stable-diffusion-v1-5/unet/config.json): replaces the three files above. "
                               "none: use them.",
                }),
                "identity": (list(IDENTITY_CHOICES), {
                    "default": "on",
                    "tooltip": "on: Hallo's identity embedding of the portrait's largest face (face_analysis/models). "
                               "off: run without it (zeros, as Hallo does for a photo without a face).",
                }),
            },
        }

    def load(self, net_name, vae_name, wav2vec2_name, precision="auto", hallo_dir=NO_HALLO_DIR, identity="on"):
        return (load_hallo(net_name, vae_name, wav2vec2_name, precision, hallo_dir=hallo_dir, identity=identity),)


# ---- EMOEchoMimicLoader ----------------------------------------------------------------------------
ECHOMIMIC_NODE = "EMO Load EchoMimic"
ECHOMIMIC_VARIANTS = {"V1": "v1", "acc": "acc"}  # widget value -> EchoMimicOptions.variant


def load_echomimic(folder_name: str, variant: str = "V1", precision: str = "auto", *,
                   motion_heads: int | None = None) -> EMOModelHandle:
    """EMOEchoMimicLoader's body: an EchoMimic pretrained_weights folder from models/echomimic ->
    a model of the V1 or acc variant. Every file is checked before anything is loaded.
    motion_heads: the motion modules' head count, which the files do not hold (default
    EchoMimic's 8; tests pass their tiny model's)."""
    _check_precision(ECHOMIMIC_NODE, precision)
    if variant not in ECHOMIMIC_VARIANTS:
        raise ValueError(f"{ECHOMIMIC_NODE}: unknown variant {variant!r}; choose one of "
                         f"{', '.join(ECHOMIMIC_VARIANTS)}")
    folder = services.resolve_model_folder(services.ECHOMIMIC_FOLDER, folder_name, ECHOMIMIC_NODE)
    device = services.torch_device()
    dtype = services.pick_dtype(precision, device)
    heads = echomimic_convert.MOTION_HEADS if motion_heads is None else motion_heads
    try:
        # Built on the CPU in the target dtype, then moved in for the first run.
        model = echomimic_convert.load_echomimic_folder(folder, variant=ECHOMIMIC_VARIANTS[variant], dtype=dtype,
                                                        motion_heads=heads)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{ECHOMIMIC_NODE}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{ECHOMIMIC_NODE}: {error}") from error
    info = {"mode": "echomimic", "variant": ECHOMIMIC_VARIANTS[variant], "sources": {"folder": str(folder)}}
    return _on_device(ECHOMIMIC_NODE, model, f"EchoMimic {variant} ({folder_name.rstrip('/')})", dtype, device, info)


class EMOEchoMimicLoader:
    DESCRIPTION = (
        "Loads EchoMimic's released weights (antgroup/echomimic, Apache-2.0): its pretrained_weights folder, "
        "unchanged, copied into ComfyUI/models/echomimic/ (denoising_unet.pth, reference_unet.pth, "
        "motion_module.pth, face_locator.pth, audio_processor/whisper_tiny.pt, sd-vae-ft-mse/, "
        "sd-image-variations-diffusers/unet/config.json; the acc variant uses denoising_unet_acc.pth and "
        "motion_module_acc.pth). V1 samples 30 steps at cfg 2.5, acc 6 steps at cfg 1.0 (about ten times "
        "faster). The whole video is denoised at once in overlapping 12-frame windows. Converting once "
        "with `python -m emo convert --from echomimic ...` into ComfyUI/models/emo and using EMO Load "
        "Checkpoint loads faster."
    )
    CATEGORY = "EMO/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("EchoMimic as an EMO model: connect it to EMO Audio Encode and EMO Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder_name": (services.list_model_folders(services.ECHOMIMIC_FOLDER, services.ECHOMIMIC_MARKERS), {
                    "tooltip": "EchoMimic's pretrained_weights folder inside ComfyUI/models/echomimic (or an "
                               "'echomimic:' folder of extra_model_paths.yaml), e.g. "
                               "models/echomimic/pretrained_weights/. Refresh the page after adding it.",
                }),
                "variant": (list(ECHOMIMIC_VARIANTS), {
                    "default": "V1",
                    "tooltip": "V1: denoising_unet.pth (30 steps, cfg 2.5). acc: the accelerated "
                               "denoising_unet_acc.pth (6 steps, cfg 1.0, about ten times faster).",
                }),
                "precision": (list(PRECISIONS), {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: fp32 on the CPU, bf16 on GPUs that support it, "
                               "else fp16.",
                }),
            },
        }

    def load(self, folder_name, variant="V1", precision="auto"):
        return (load_echomimic(folder_name, variant, precision),)
