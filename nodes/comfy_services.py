"""The one place where the EMO nodes talk to ComfyUI's services.

Inside ComfyUI this module uses `folder_paths` (model folders, output/temp folders, save
paths), `comfy.model_management` (devices, freeing memory, interruption), `comfy.utils`
(progress bar), `comfy_api` (the core VIDEO type) and `server.PromptServer` (messages to the
browser). Outside ComfyUI (tests, scripts) every function has a plain fallback:

- model files: EMO checkpoints from the folders set with `set_models_dir()` or the
  `EMO_MODELS_DIR` environment variable (os.pathsep-separated); other kinds ('checkpoints',
  'vae', 'audio_encoders', 'hallo', 'audio_separator', ...) from `set_model_folders(kind, ...)`,
  else `models/<kind>` under the working directory (and `models/hallo/audio_separator` for
  'audio_separator');
- output/temp folders: `set_output_directories()` or `EMO_OUTPUT_DIR` / `EMO_TEMP_DIR`;
- device: CUDA, then MPS, then CPU;
- progress: a no-op bar that remembers its last value (tests read it); latent previews on;
- interruption: a flag set with `request_interrupt()`; `check_interrupted()` then raises
  `Interrupted`, a `emo.pipeline.GenerationCancelled`.

ComfyUI modules are looked up lazily, when a function needs them, so importing the nodes never
imports ComfyUI and tests can install stand-ins in `sys.modules`.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ..emo.checkpoints import ASSETS_DIR
from ..emo.runtime import devices
from ..emo.runtime.output import atomic_output
from ..emo.pipeline import GenerationCancelled

logger = logging.getLogger(__name__)

MODEL_FOLDER = "emo"  # ComfyUI/models/emo, also a key for extra_model_paths.yaml
HALLO_FOLDER = "hallo"  # ComfyUI/models/hallo: Hallo's net.pth, for EMO Load Hallo
# ComfyUI/models/echomimic/<name>/: EchoMimic's pretrained_weights folders, unchanged, for EMO Load
# EchoMimic (listed by ECHOMIMIC_MARKERS, the files that only such a folder holds).
ECHOMIMIC_FOLDER = "echomimic"
ECHOMIMIC_MARKERS = ("denoising_unet.pth", "denoising_unet_acc.pth", "reference_unet.pth")
# ComfyUI/models/audio_separator: Kim_Vocal_2.onnx (Hallo's pretrained_models/audio_separator/),
# for EMO Separate Vocals. Also listed from models/hallo/audio_separator, where a whole Hallo
# pretrained_models folder copied into models/hallo puts it (and ComfyUI_Hallo2 asks for it).
AUDIO_SEPARATOR_FOLDER = "audio_separator"
ONNX_EXTENSIONS = {".onnx"}
CHECKPOINT_EXTENSIONS = {".safetensors"}
# What emo.weights reads: safetensors and PyTorch pickles (recognised by content, not name).
WEIGHT_EXTENSIONS = {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin"}
# The folders this pack registers with ComfyUI, and the files listed from them. Other kinds
# (checkpoints, vae, audio_encoders, animatediff_models) belong to ComfyUI or other packs.
OWN_FOLDERS = {MODEL_FOLDER: CHECKPOINT_EXTENSIONS, HALLO_FOLDER: WEIGHT_EXTENSIONS,
               AUDIO_SEPARATOR_FOLDER: ONNX_EXTENSIONS, ECHOMIMIC_FOLDER: WEIGHT_EXTENSIONS}
# More default folders of a kind, under the models folder, after models/<kind> itself.
EXTRA_DEFAULT_FOLDERS = {AUDIO_SEPARATOR_FOLDER: (f"{HALLO_FOLDER}/{AUDIO_SEPARATOR_FOLDER}",)}
# Checkpoints shipped with the pack (emo/assets: the demo model for synthetic faces), listed after
# the user's own EMO checkpoints; a user's file of the same name comes first.
BUNDLED_FOLDER = ASSETS_DIR


# ---- finding ComfyUI --------------------------------------------------------------------
def _comfy_module(name: str):
    """A ComfyUI module if ComfyUI is running (or a test installed a stand-in), else None.

    Only `comfy.*`, `folder_paths` and `comfy_api.*` are imported here: they exist only in a
    ComfyUI tree. `server` is a common module name, so it is only taken from `sys.modules`
    (ComfyUI imports it before any node runs).
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    if name == "server":
        return None
    if not in_comfyui():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def in_comfyui() -> bool:
    """True inside a ComfyUI process: its `folder_paths` and `comfy.model_management` load.

    An unrelated package called `comfy` (there is one on PyPI) has no `model_management`.
    """
    sys_modules = sys.modules
    if "folder_paths" in sys_modules and "comfy.model_management" in sys_modules:
        return True
    global _comfyui_found
    if _comfyui_found is None:
        try:
            importlib.import_module("folder_paths")
            importlib.import_module("comfy.model_management")
            _comfyui_found = True
        except ImportError:
            _comfyui_found = False
    return _comfyui_found


_comfyui_found: bool | None = None


# ---- model folders ------------------------------------------------------------------------
# A "kind" is a ComfyUI model-folder key: 'emo', 'hallo', 'checkpoints', 'vae', 'audio_encoders',
# 'animatediff_models' (ComfyUI-AnimateDiff-Evolved's key for motion modules).
_folder_overrides: dict[str, list[Path]] = {}


def set_model_folders(kind: str, *folders: str | os.PathLike) -> None:
    """Outside ComfyUI: the folders to list models of one kind from (none: back to the default,
    `models/<kind>` under the working directory, or EMO_MODELS_DIR for 'emo')."""
    if folders:
        _folder_overrides[kind] = [Path(f) for f in folders]
    else:
        _folder_overrides.pop(kind, None)


def reset_model_folders() -> None:
    """Outside ComfyUI: every kind back to its default folder."""
    _folder_overrides.clear()


def set_models_dir(*folders: str | os.PathLike) -> None:
    """Outside ComfyUI: the folders to list EMO checkpoints from (none: back to the default)."""
    set_model_folders(MODEL_FOLDER, *folders)


def _default_folders(root: Path, kind: str) -> list[Path]:
    return [root / kind] + [root / extra for extra in EXTRA_DEFAULT_FOLDERS.get(kind, ())]


def register_model_folder() -> None:
    """Make ComfyUI list `models/emo`, `models/hallo`, `models/echomimic` and `models/audio_separator`
    (plus `models/hallo/audio_separator`; and any `emo:` / `hallo:` / `echomimic:` / `audio_separator:`
    paths from extra_model_paths.yaml), and the pack's bundled checkpoints (BUNDLED_FOLDER) last under `emo`.

    ComfyUI reads extra_model_paths.yaml before it imports custom nodes; an entry there creates
    the folder key with no extension filter, so the default folder is added in front and the
    filter set here. Safe to call more than once.
    """
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is None:
        return
    for kind, wanted in OWN_FOLDERS.items():
        defaults = [str(p) for p in _default_folders(Path(folder_paths.models_dir), kind)]
        known = folder_paths.folder_names_and_paths.get(kind)
        if known is None:
            folder_paths.folder_names_and_paths[kind] = (defaults, set(wanted))
            continue
        paths, extensions = known
        for position, default in enumerate(d for d in defaults if d not in paths):
            paths.insert(position, default)
        folder_paths.folder_names_and_paths[kind] = (paths, set(extensions) | wanted)
    emo_paths = folder_paths.folder_names_and_paths[MODEL_FOLDER][0]
    if str(BUNDLED_FOLDER) not in emo_paths:
        emo_paths.append(str(BUNDLED_FOLDER))


def _registered(folder_paths, kind: str) -> bool:
    return folder_paths is not None and kind in folder_paths.folder_names_and_paths


def model_folders(kind: str = MODEL_FOLDER) -> list[Path]:
    """Where models of `kind` are looked for, in order. Inside ComfyUI a kind nobody registered
    (no AnimateDiff pack installed, an older ComfyUI without audio_encoders) is looked for in its
    usual place, models/<kind>, without registering another pack's key."""
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is not None:
        register_model_folder()
        if _registered(folder_paths, kind):
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        return [Path(folder_paths.models_dir) / kind]
    if kind in _folder_overrides:
        return list(_folder_overrides[kind])
    env = os.environ.get("EMO_MODELS_DIR") if kind == MODEL_FOLDER else None
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return _default_folders(Path.cwd() / "models", kind)


def _files_in(folders: list[Path]) -> list[str]:
    names = set()
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and ".git" not in path.relative_to(folder).parts:
                    names.add(path.relative_to(folder).as_posix())
    return sorted(names)


def list_model_files(kind: str, extensions: set[str] | None = None, *, hf_folders: bool = False) -> list[str]:
    """Model names of `kind`: paths relative to their folder, '/'-separated, sorted.

    extensions: the file types listed (default WEIGHT_EXTENSIONS).
    hf_folders: a subfolder holding a config.json (a Hugging Face or diffusers model,
        such as wav2vec2-base-960h) is listed once, as 'name/', instead of its weight files.
    """
    extensions = WEIGHT_EXTENSIONS if extensions is None else extensions
    folder_paths = _comfy_module("folder_paths")
    folders = model_folders(kind)
    if _registered(folder_paths, kind):
        names = folder_paths.get_filename_list(kind)  # ComfyUI's cached listing
    else:
        names = _files_in(folders)
    names = [n for n in names if os.path.splitext(n)[1].lower() in extensions]
    if not hf_folders:
        return sorted(names)
    listed = set()
    for name in names:
        parent = os.path.dirname(name)
        if parent and any((folder / parent / "config.json").is_file() for folder in folders):
            listed.add(Path(parent).as_posix() + "/")
        else:
            listed.add(name)
    return sorted(listed)


def list_model_folders(kind: str, markers: tuple[str, ...], depth: int = 2) -> list[str]:
    """Model folders of `kind` (a model that is a folder of several files, such as EchoMimic's
    pretrained_weights): every folder up to `depth` levels below a `kind` folder that holds one of
    the `markers` files, as 'name/' ('./' for a `kind` folder itself), '/'-separated, sorted."""
    names = set()
    for root in model_folders(kind):
        if not root.is_dir():
            continue
        candidates = [root]
        level = [root]
        for _ in range(depth):
            level = [d for parent in level for d in parent.iterdir() if d.is_dir() and not d.name.startswith(".")]
            candidates += level
        for folder in candidates:
            if any((folder / marker).is_file() for marker in markers):
                relative = folder.relative_to(root).as_posix()
                names.add("./" if relative == "." else relative + "/")
    return sorted(names)


def resolve_model_folder(kind: str, name: str, node: str) -> Path:
    """The folder behind a name from `list_model_folders`; FileNotFoundError starting with `node`
    if no `kind` folder has it (what is inside is checked by the loader, which names each file)."""
    relative = Path(os.path.normpath("/" + name)).relative_to("/")  # no escaping the folder
    folders = model_folders(kind)
    for folder in folders:
        if (folder / relative).is_dir():
            return folder / relative
    shown = ", ".join(str(f) for f in folders) or "(none)"
    raise FileNotFoundError(
        f"{node}: folder {name!r} not found in the {kind} model folders ({shown}); put the folder there (or "
        f"list more folders under '{kind}:' in extra_model_paths.yaml) and refresh the page"
    )


def resolve_model_file(kind: str, name: str, node: str) -> Path:
    """The file (or, for a 'name/' entry, the model folder) behind a name from
    `list_model_files`; FileNotFoundError starting with `node` if there is none."""
    relative = Path(os.path.normpath("/" + name)).relative_to("/")  # no escaping the folder
    is_folder = name.endswith("/")
    folders = model_folders(kind)
    for folder in folders:
        candidate = folder / relative
        if (candidate / "config.json").is_file() if is_folder else candidate.is_file():
            return candidate
    shown = ", ".join(str(f) for f in folders) or "(none)"
    raise FileNotFoundError(
        f"{node}: {name!r} not found in the {kind} model folders ({shown}); put the "
        f"{'model folder' if is_folder else 'file'} there (or list more folders under '{kind}:' in "
        "extra_model_paths.yaml) and refresh the page"
    )


def _bundled_checkpoints() -> list[str]:
    if not BUNDLED_FOLDER.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_FOLDER.iterdir() if p.is_file() and p.suffix in CHECKPOINT_EXTENSIONS)


def list_checkpoints() -> list[str]:
    """EMO checkpoint names (paths relative to their model folder, '/'-separated), sorted; the
    pack's bundled ones (the demo model) included (inside ComfyUI through its registered folder)."""
    names = list_model_files(MODEL_FOLDER, CHECKPOINT_EXTENSIONS)
    if not _registered(_comfy_module("folder_paths"), MODEL_FOLDER):
        names = sorted(set(names) | set(_bundled_checkpoints()))
    return names


def resolve_checkpoint(name: str) -> Path:
    """The file behind a checkpoint name from `list_checkpoints()`; FileNotFoundError if none."""
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is not None:
        register_model_folder()
        found = folder_paths.get_full_path(MODEL_FOLDER, name)
        if found is not None:
            return Path(found)
    else:
        relative = Path(os.path.normpath("/" + name)).relative_to("/")  # no escaping the folder
        for folder in model_folders() + [BUNDLED_FOLDER]:
            if (folder / relative).is_file():
                return folder / relative
    folders = ", ".join(str(f) for f in model_folders()) or "(none)"
    raise FileNotFoundError(
        f"EMO Load Checkpoint: checkpoint {name!r} not found in the EMO model folders ({folders}); put the "
        f".safetensors file there (or add an 'emo:' entry to extra_model_paths.yaml) and refresh the page"
    )


# ---- sample inputs ----------------------------------------------------------------------------
# The pack's sample media (emo/assets) and the names they get in ComfyUI's input folder, where
# the shipped workflows' LoadImage / LoadAudio / LoadImageMask nodes find them.
SAMPLES = {
    "emo_demo_portrait.png": "sample_portrait.png",  # a held-out synthetic talker, for the demo model
    "emo_demo_portrait_mask.png": "sample_portrait_mask.png",  # its face region
    "emo_demo_voice.wav": "sample_voice.wav",  # its voice
    "emo_sample_photo.jpg": "sample_photo.jpg",  # a real photo (NASA, public domain), for real models
    "emo_sample_speech.wav": "sample_speech.wav",  # synthetic speech (espeak-ng), for real models
}


def install_samples(folder: str | os.PathLike | None = None) -> list[Path]:
    """Copy the sample media into ComfyUI's input folder (or `folder`) under the names the
    shipped workflows use, so they run out of the box. A file already there is never
    replaced (it may be the user's). Returns the files written."""
    if folder is None:
        folder_paths = _comfy_module("folder_paths")
        if folder_paths is None:
            return []
        folder = folder_paths.get_input_directory()
    folder = Path(folder)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in SAMPLES.items():
            target = folder / name
            if not target.exists() and (ASSETS_DIR / source).is_file():
                with atomic_output(target) as temp:
                    shutil.copyfile(ASSETS_DIR / source, temp)
                written.append(target)
    except OSError as error:  # a read-only input folder: the workflows then need the user's files
        logger.warning("EMO: could not copy the sample inputs to %s (%s)", folder, error)
    if written:
        logger.info("EMO: copied %d sample input(s) to %s", len(written), folder)
    return written


# ---- devices and memory -------------------------------------------------------------------
def torch_device() -> torch.device:
    """The device ComfyUI computes on (its --cpu / --cuda-device choices apply)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return devices.pick_device("auto")


def offload_device() -> torch.device:
    """Where idle weights wait (CPU RAM, unless ComfyUI was told to keep them on the GPU)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return torch.device("cpu")


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto', 'fp32', 'fp16' or 'bf16' -> a torch dtype for `device`.

    auto: fp32 on the CPU; on a GPU bf16 where supported, else fp16 (ComfyUI's own checks when
    it runs, so its --force-fp16/--force-fp32 flags apply; emo.runtime.devices outside it).
    """
    mm = _comfy_module("comfy.model_management")
    if precision != "auto" or device.type == "cpu" or mm is None:
        return devices.pick_dtype(precision, device)
    if mm.should_use_bf16(device):
        return torch.bfloat16
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


def free_memory(device: torch.device) -> int | None:
    """Free bytes on `device` as ComfyUI counts them (None outside ComfyUI / unknown)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.get_free_memory(device))
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def make_room(device: torch.device, num_bytes: int) -> None:
    """Ask ComfyUI to unload its own models from `device` until `num_bytes` are free."""
    if device.type == "cpu":
        return
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.free_memory(num_bytes, device)


# ---- ComfyUI's model management ------------------------------------------------------------
def model_patcher(model: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
    """A ComfyUI ModelPatcher around `model` (None outside ComfyUI): through it ComfyUI knows the
    model's size and where it is, so "Unload Models" and other models' loads can move it back
    to the offload device."""
    patcher_module = _comfy_module("comfy.model_patcher")
    if patcher_module is None:
        return None
    return patcher_module.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def low_vram() -> bool:
    """ComfyUI runs in --lowvram / --novram mode (weights must not all sit on the GPU)."""
    mm = _comfy_module("comfy.model_management")
    if mm is None:
        return False
    return mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM)


def total_memory(device: torch.device) -> int | None:
    """All memory of `device` as ComfyUI counts it (None outside ComfyUI / unknown)."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.get_total_memory(device))
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[1])
    return None


def load_through_comfyui(patcher, memory_required: int) -> None:
    """Load a patched model fully onto its device the way ComfyUI loads its own: other models
    are unloaded first if memory is short, and the model is registered as loaded."""
    mm = _comfy_module("comfy.model_management")
    mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)


def empty_cache() -> None:
    """Return cached allocator blocks to the driver after weights were moved off a GPU."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- progress and interruption -------------------------------------------------------------
class Progress:
    """A progress bar for one node run: ComfyUI's `ProgressBar` when it runs, else a no-op
    that records the last value (`current`, `total`, `previews`) for tests."""

    def __init__(self, total: int):
        self.total = total
        self.current = 0
        self.previews = 0
        utils = _comfy_module("comfy.utils")
        self._bar = utils.ProgressBar(total) if utils is not None else None

    def update_absolute(self, value: int, total: int | None = None, preview_image=None) -> None:
        """preview_image: a PIL image shown on the node (ComfyUI scales it down to its
        --preview-size, 512 px by default)."""
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        preview = None
        if preview_image is not None:
            self.previews += 1
            preview = ("JPEG", preview_image, preview_size())  # what ComfyUI's own previewers send
        if self._bar is not None:
            self._bar.update_absolute(self.current, self.total, preview)


def _cli_arg(name: str, default=None):
    cli_args = _comfy_module("comfy.cli_args")
    return getattr(getattr(cli_args, "args", None), name, default)


def latent_previews_enabled() -> bool:
    """False when ComfyUI runs with --preview-method none (then samplers send no per-step
    previews, as its KSampler does); True otherwise and outside ComfyUI."""
    method = _cli_arg("preview_method")
    return getattr(method, "value", method) != "none"  # an enum in ComfyUI


def preview_size() -> int:
    """ComfyUI's --preview-size: the longest side of a progress preview (default 512)."""
    size = _cli_arg("preview_size", 512)
    return size if isinstance(size, int) and size > 0 else 512


class Interrupted(GenerationCancelled):
    """Raised outside ComfyUI when `request_interrupt()` was called (ComfyUI raises its own
    `InterruptProcessingException` instead, which it reports as "interrupted")."""


_interrupt = threading.Event()


def request_interrupt() -> None:
    """Outside ComfyUI: make the next `check_interrupted()` raise (what Cancel does in the UI)."""
    _interrupt.set()


def clear_interrupt() -> None:
    _interrupt.clear()


def check_interrupted() -> None:
    """Raise if the user cancelled the prompt; call it between small units of work."""
    mm = _comfy_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
        return
    if _interrupt.is_set():
        _interrupt.clear()  # like ComfyUI: one cancel stops one run
        raise Interrupted("interrupted by the user")


# ---- output files ----------------------------------------------------------------------------
_directories: dict[str, Path] = {}


def set_output_directories(output: str | os.PathLike | None = None,
                           temp: str | os.PathLike | None = None) -> None:
    """Outside ComfyUI: where VideoCombine writes (None: back to the default)."""
    for key, value in (("output", output), ("temp", temp)):
        if value is None:
            _directories.pop(key, None)
        else:
            _directories[key] = Path(value)


def output_directory(kind: str = "output") -> Path:
    """ComfyUI's output or temp folder ('output' / 'temp')."""
    if kind not in ("output", "temp"):
        raise ValueError(f"output_directory: kind must be 'output' or 'temp', got {kind!r}")
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is not None:
        return Path(folder_paths.get_output_directory() if kind == "output" else folder_paths.get_temp_directory())
    if kind in _directories:
        return _directories[kind]
    env = os.environ.get("EMO_OUTPUT_DIR" if kind == "output" else "EMO_TEMP_DIR")
    return Path(env) if env else Path.cwd() / kind


def save_path(filename_prefix: str, kind: str, width: int, height: int) -> tuple[Path, str, int, str]:
    """(folder, file stem, next counter, subfolder) for a new output file, as ComfyUI's save
    nodes number them: the prefix may hold a subfolder ('EMO/portrait'), %width%/%height%/%date
    parts%, and must stay inside the output folder."""
    base = output_directory(kind)
    folder_paths = _comfy_module("folder_paths")
    if folder_paths is not None:
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, str(base), width, height)
        return Path(folder), stem, counter, subfolder
    prefix = _expand_prefix(filename_prefix, width, height)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    stem = os.path.basename(os.path.normpath(prefix))
    folder = (base / subfolder).resolve()
    if os.path.commonpath([base.resolve(), folder]) != str(base.resolve()) or not stem or stem in (".", ".."):
        raise ValueError(
            f"EMO Video Combine: filename_prefix {filename_prefix!r} points outside the output folder {base}; "
            "use a relative name such as 'EMO/portrait'"
        )
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1
    for existing in folder.iterdir():
        name = existing.name
        if name.startswith(stem + "_"):
            digits = name[len(stem) + 1:].split("_")[0].split(".")[0]
            if digits.isdigit():
                counter = max(counter, int(digits) + 1)
    return folder, stem, counter, subfolder


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (("%width%", str(width)), ("%height%", str(height)), ("%year%", str(now.tm_year)),
                       ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                       ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                       ("%second%", f"{now.tm_sec:02}")):
        prefix = prefix.replace(key, value)
    return prefix


def metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata flag (no workflow in saved files)."""
    return bool(_cli_arg("disable_metadata", False))


def video_from_file(path: str | os.PathLike) -> Any | None:
    """ComfyUI's core VIDEO object for a file (for SaveVideo, GetVideoComponents...), or None
    when the running ComfyUI has no VIDEO type (older than 0.3.30) or outside ComfyUI."""
    for module_name in ("comfy_api.latest._input_impl", "comfy_api.input_impl"):
        module = _comfy_module(module_name)
        video_class = getattr(module, "VideoFromFile", None)
        if video_class is not None:
            return video_class(str(path))
    return None


# ---- messages to the browser -----------------------------------------------------------------
def send_ui_message(event: str, data: dict) -> None:
    """Send `data` to the browser that queued the prompt (web/emo.js listens); no-op outside."""
    server = _comfy_module("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    try:
        instance.send_sync(event, data, getattr(instance, "client_id", None))
    except Exception as error:  # a UI message must never fail a generation
        logger.debug("send_ui_message %s failed: %s", event, error)
