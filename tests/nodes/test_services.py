"""nodes.comfy_services: the plain fallbacks used outside ComfyUI, and the ComfyUI path checked
against stand-in `folder_paths` / `comfy.*` / `server` modules installed in sys.modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from emo.checkpoints import DEMO_CHECKPOINT
from emo.pipeline import GenerationCancelled
from nodes import comfy_services as services
from tests.nodes.conftest import BUNDLED


# ---- outside ComfyUI ---------------------------------------------------------------------------
def test_not_in_comfyui_here():
    assert services.in_comfyui() is False
    assert services.video_from_file("x.mp4") is None
    services.send_ui_message("emo.plan", {"frames": 1})  # a no-op, not an error


def test_checkpoints_listed_from_the_models_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.safetensors", "sub/a.safetensors", "notes.txt", "old.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    services.set_models_dir(tmp_path)
    assert services.list_checkpoints() == sorted(["b.safetensors", "sub/a.safetensors"] + BUNDLED)
    assert services.resolve_checkpoint("sub/a.safetensors") == tmp_path / "sub" / "a.safetensors"


@pytest.mark.skipif(not DEMO_CHECKPOINT.is_file(), reason="the demo model is not shipped yet")
def test_the_shipped_demo_model_is_listed_after_the_users_own(tmp_path):
    services.set_models_dir(tmp_path)
    assert DEMO_CHECKPOINT.name in services.list_checkpoints()
    assert services.resolve_checkpoint(DEMO_CHECKPOINT.name) == DEMO_CHECKPOINT
    (tmp_path / DEMO_CHECKPOINT.name).write_bytes(b"x")  # the user's file of the same name wins
    assert services.list_checkpoints().count(DEMO_CHECKPOINT.name) == 1
    assert services.resolve_checkpoint(DEMO_CHECKPOINT.name) == tmp_path / DEMO_CHECKPOINT.name


def test_models_folder_from_environment(tmp_path, monkeypatch):
    services.set_models_dir()
    monkeypatch.setenv("EMO_MODELS_DIR", str(tmp_path))
    (tmp_path / "m.safetensors").write_bytes(b"x")
    assert services.model_folders() == [tmp_path]
    assert services.list_checkpoints() == sorted(["m.safetensors"] + BUNDLED)


def test_missing_checkpoint_names_the_folders(tmp_path):
    services.set_models_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"EMO Load Checkpoint: checkpoint 'nope.safetensors' not found.*"
                                                 + str(tmp_path).replace("/", ".")):
        services.resolve_checkpoint("nope.safetensors")
    with pytest.raises(FileNotFoundError):  # no escaping the models folder
        (tmp_path.parent / "outside.safetensors").write_bytes(b"x")
        services.resolve_checkpoint("../outside.safetensors")


def test_other_model_kinds_and_model_folders(tmp_path, monkeypatch):
    for name in ("w.safetensors", "hf/config.json", "hf/model.safetensors", "hf/pytorch_model.bin",
                 "plain/x.bin", "notes.txt", ".git/objects/y.bin"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    services.set_model_folders("audio_encoders", tmp_path)
    assert services.list_model_files("audio_encoders") == [
        "hf/model.safetensors", "hf/pytorch_model.bin", "plain/x.bin", "w.safetensors"]
    # A folder with a config.json is one model, listed as 'name/'.
    assert services.list_model_files("audio_encoders", hf_folders=True) == ["hf/", "plain/x.bin", "w.safetensors"]
    assert services.resolve_model_file("audio_encoders", "hf/", "Node") == tmp_path / "hf"
    assert services.resolve_model_file("audio_encoders", "plain/x.bin", "Node") == tmp_path / "plain" / "x.bin"
    with pytest.raises(FileNotFoundError, match=r"^Node: 'plain/' not found in the audio_encoders model folders "
                                                 rf"\({tmp_path}\); put the model folder there"):
        services.resolve_model_file("audio_encoders", "plain/", "Node")  # no config.json: not a model folder
    (tmp_path.parent / "outside.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):  # no escaping the folder
        services.resolve_model_file("audio_encoders", "../outside.bin", "Node")
    # Kinds nobody set: models/<kind> under the working directory.
    monkeypatch.chdir(tmp_path)
    assert services.model_folders("vae") == [tmp_path / "models" / "vae"]
    assert services.list_model_files("vae") == []
    services.reset_model_folders()
    assert services.model_folders("audio_encoders") == [tmp_path / "models" / "audio_encoders"]


def test_save_path_numbers_files_and_stays_inside(comfy_environment):
    folder, stem, counter, subfolder = services.save_path("EMO/talk", "output", 64, 64)
    assert folder == (comfy_environment / "output" / "EMO").resolve() and stem == "talk"
    assert (counter, subfolder) == (1, "EMO")
    (folder / "talk_00001.mp4").write_bytes(b"x")
    (folder / "talk_00007.webm").write_bytes(b"x")
    (folder / "talking_00099.mp4").write_bytes(b"x")  # another prefix
    assert services.save_path("EMO/talk", "output", 64, 64)[2] == 8
    (folder / "talk_00012_.mp4").write_bytes(b"x")  # ComfyUI's own form
    assert services.save_path("EMO/talk", "output", 64, 64)[2] == 13
    assert services.save_path("%width%x%height%", "temp", 64, 32)[1] == "64x32"
    with pytest.raises(ValueError, match="outside the output folder"):
        services.save_path("../../escape", "output", 64, 64)


def test_interrupt_flag_raises_once():
    services.check_interrupted()
    services.request_interrupt()
    with pytest.raises(services.Interrupted) as caught:
        services.check_interrupted()
    assert isinstance(caught.value, GenerationCancelled)
    services.check_interrupted()  # one cancel stops one run


def test_progress_records_values_and_previews():
    progress = services.Progress(10)
    progress.update_absolute(4)
    progress.update_absolute(99, preview_image=object())
    assert (progress.current, progress.total, progress.previews) == (10, 10, 1)


def test_dtype_choice():
    assert services.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert services.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        services.pick_dtype("fp8", torch.device("cpu"))


# ---- inside ComfyUI (stand-in modules) ------------------------------------------------------------
class _Interrupt(Exception):
    pass


@pytest.fixture
def fake_comfyui(tmp_path, monkeypatch):
    """Minimal `folder_paths`, `comfy.model_management`, `comfy.utils`, `comfy.cli_args`,
    `comfy_api.input_impl` and `server` with the functions the services call."""
    models = tmp_path / "models"
    extra = tmp_path / "extra_emo"
    for folder in (models / "emo", extra):
        folder.mkdir(parents=True)
    (models / "emo" / "a.safetensors").write_bytes(b"x")
    (extra / "b.safetensors").write_bytes(b"x")
    (extra / "readme.md").write_bytes(b"x")

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models)
    # What extra_model_paths.yaml with an 'emo:' entry leaves behind: the key, no extension filter.
    folder_paths.folder_names_and_paths = {"emo": ([str(extra)], set())}

    def get_folder_paths(name):
        return list(folder_paths.folder_names_and_paths[name][0])

    def get_filename_list(name):  # recursive, like ComfyUI's
        folders, extensions = folder_paths.folder_names_and_paths[name]
        found = set()
        for folder in folders:
            for path in Path(folder).rglob("*"):
                if path.is_file() and (not extensions or path.suffix in extensions):
                    found.add(path.relative_to(folder).as_posix())
        return sorted(found)

    def get_full_path(name, filename):
        for folder in folder_paths.folder_names_and_paths[name][0]:
            candidate = Path(folder) / filename
            if candidate.is_file():
                return str(candidate)
        return None

    folder_paths.get_folder_paths = get_folder_paths
    folder_paths.get_filename_list = get_filename_list
    folder_paths.get_full_path = get_full_path
    folder_paths.get_output_directory = lambda: str(tmp_path / "out")
    folder_paths.get_temp_directory = lambda: str(tmp_path / "tmp")
    folder_paths.get_save_image_path = lambda prefix, base, w, h: (base + "/sub", "stem", 3, "sub", prefix)

    state = types.SimpleNamespace(interrupted=False, freed=[], bars=[], messages=[])
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.should_use_bf16 = lambda device: True
    mm.should_use_fp16 = lambda device: True
    mm.get_free_memory = lambda device: 123
    mm.free_memory = lambda num_bytes, device: state.freed.append((num_bytes, device))
    mm.soft_empty_cache = lambda: None

    def throw():
        if state.interrupted:
            state.interrupted = False
            raise _Interrupt()

    mm.throw_exception_if_processing_interrupted = throw

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            self.calls = []
            state.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.calls.append((value, total, preview))

    utils.ProgressBar = ProgressBar
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(disable_metadata=True)
    input_impl = types.ModuleType("comfy_api.input_impl")
    input_impl.VideoFromFile = lambda path: ("VIDEO", path)
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
        client_id="c1", send_sync=lambda event, data, sid: state.messages.append((event, data, sid))))

    for name, module in {"folder_paths": folder_paths, "comfy": types.ModuleType("comfy"),
                         "comfy.model_management": mm, "comfy.utils": utils, "comfy.cli_args": cli_args,
                         "comfy_api": types.ModuleType("comfy_api"), "comfy_api.input_impl": input_impl,
                         "server": server}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(state=state, folder_paths=folder_paths, models=models, extra=extra, tmp=tmp_path)


def test_registers_models_emo_and_keeps_extra_model_paths(fake_comfyui):
    assert services.in_comfyui()
    services.register_model_folder()
    services.register_model_folder()  # idempotent
    folders, extensions = fake_comfyui.folder_paths.folder_names_and_paths["emo"]
    assert folders == [str(fake_comfyui.models / "emo"), str(fake_comfyui.extra), str(services.BUNDLED_FOLDER)]
    assert ".safetensors" in extensions
    assert services.list_checkpoints() == sorted(["a.safetensors", "b.safetensors"] + BUNDLED)
    assert services.resolve_checkpoint("b.safetensors") == fake_comfyui.extra / "b.safetensors"


def test_other_kinds_inside_comfyui(fake_comfyui):
    folder_paths, models = fake_comfyui.folder_paths, fake_comfyui.models
    pt = {".safetensors", ".bin", ".pth", ".ckpt"}
    folder_paths.folder_names_and_paths["audio_encoders"] = ([str(models / "audio_encoders")], pt)
    for name in ("audio_encoders/wav2vec2-base-960h/config.json",
                 "audio_encoders/wav2vec2-base-960h/model.safetensors",
                 "audio_encoders/wav2vec2_large_english_fp16.safetensors",
                 "animatediff_models/mm_sd_v15_v2.ckpt", "hallo/net.pth"):
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(b"x")
    assert services.list_model_files("audio_encoders", hf_folders=True) == [
        "wav2vec2-base-960h/", "wav2vec2_large_english_fp16.safetensors"]
    assert services.resolve_model_file("audio_encoders", "wav2vec2-base-960h/", "N") == \
        models / "audio_encoders" / "wav2vec2-base-960h"
    # The pack registers models/hallo like models/emo, with the weight file types.
    assert services.list_model_files(services.HALLO_FOLDER) == ["net.pth"]
    assert folder_paths.folder_names_and_paths["hallo"] == ([str(models / "hallo")], services.WEIGHT_EXTENSIONS)
    # AnimateDiff-Evolved not installed: its folder is still found where it lives, not registered.
    assert services.list_model_files("animatediff_models") == ["mm_sd_v15_v2.ckpt"]
    assert "animatediff_models" not in folder_paths.folder_names_and_paths
    folder_paths.folder_names_and_paths["animatediff_models"] = ([str(fake_comfyui.extra)], pt)  # once it is
    assert services.model_folders("animatediff_models") == [fake_comfyui.extra]


def test_preview_settings_follow_comfyui_flags(fake_comfyui, monkeypatch):
    args = sys.modules["comfy.cli_args"].args
    assert services.latent_previews_enabled() and services.preview_size() == 512
    monkeypatch.setattr(args, "preview_method", types.SimpleNamespace(value="none"), raising=False)
    monkeypatch.setattr(args, "preview_size", 256, raising=False)
    assert not services.latent_previews_enabled()
    progress = services.Progress(2)
    progress.update_absolute(1, preview_image="pil")
    assert fake_comfyui.state.bars[-1].calls == [(1, 2, ("JPEG", "pil", 256))]
    args.preview_method = types.SimpleNamespace(value="latent2rgb")
    assert services.latent_previews_enabled()


def test_registers_the_folder_when_no_extra_paths(fake_comfyui):
    del fake_comfyui.folder_paths.folder_names_and_paths["emo"]
    services.register_model_folder()
    assert fake_comfyui.folder_paths.folder_names_and_paths["emo"] == (
        [str(fake_comfyui.models / "emo"), str(services.BUNDLED_FOLDER)], {".safetensors"})


def test_comfyui_services_are_used(fake_comfyui):
    state = fake_comfyui.state
    assert services.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    services.make_room(torch.device("cuda"), 1000)
    assert state.freed == [(1000, torch.device("cuda"))]
    assert services.free_memory(torch.device("cuda")) == 123

    progress = services.Progress(4)
    progress.update_absolute(2, preview_image="pil")
    assert state.bars[-1].calls == [(2, 4, ("JPEG", "pil", 512))]

    services.check_interrupted()
    state.interrupted = True
    with pytest.raises(_Interrupt):  # ComfyUI's own exception, so it reports "interrupted"
        services.check_interrupted()

    assert services.output_directory("temp") == fake_comfyui.tmp / "tmp"
    assert services.save_path("x", "output", 1, 1)[1:] == ("stem", 3, "sub")
    assert services.metadata_disabled() is True
    assert services.video_from_file("/v.mp4") == ("VIDEO", "/v.mp4")
    services.send_ui_message("emo.plan", {"frames": 3})
    assert state.messages == [("emo.plan", {"frames": 3}, "c1")]


def test_samples_are_installed_once_and_never_over_a_users_file(tmp_path):
    written = services.install_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted(services.SAMPLES)
    for name, source in services.SAMPLES.items():
        assert (tmp_path / name).read_bytes() == (services.ASSETS_DIR / source).read_bytes()
    (tmp_path / "emo_demo_voice.wav").write_bytes(b"the user's own")
    assert services.install_samples(tmp_path) == []
    assert (tmp_path / "emo_demo_voice.wav").read_bytes() == b"the user's own"
    assert services.install_samples() == []  # outside ComfyUI: no input folder to fill
