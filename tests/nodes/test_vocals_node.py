"""EMOSeparateVocals, called directly (no ComfyUI), and its model folder inside a stand-in ComfyUI."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from emo.audio import load_audio
from emo.vocals import KIM_VOCAL_2, separate_vocals
from nodes import comfy_services as services
from nodes import vocals as vocals_node
from nodes.vocals import EMOSeparateVocals
from tests.helpers import require_onnxruntime
from tests.nodes import test_contract as contract

require_onnxruntime()

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vocal_separation"


@pytest.fixture
def separator_folder(tmp_path):
    """models/audio_separator holding the fixture's tiny model as Kim_Vocal_2.onnx, plus another file."""
    folder = tmp_path / "audio_separator"
    (folder / "other").mkdir(parents=True)
    shutil.copy(FIXTURE / "tiny_Kim_Vocal_2.onnx", folder / "Kim_Vocal_2.onnx")
    (folder / "other" / "UVR-MDX-NET-Inst_HQ_3.onnx").write_bytes(b"not a model")
    (folder / "notes.txt").write_text("not listed")
    services.set_model_folders(services.AUDIO_SEPARATOR_FOLDER, folder)
    vocals_node._loaded.clear()
    yield folder
    vocals_node._loaded.clear()


@pytest.fixture(scope="module")
def song():
    waveform, rate = load_audio(FIXTURE / "song.flac")
    return {"waveform": waveform[None, :, :96000], "sample_rate": rate}  # 2 s of the fixture song


def test_declaration_lists_kim_vocal_2_first_and_explains_when_to_use_it(separator_folder):
    types_ = EMOSeparateVocals.INPUT_TYPES()["required"]
    assert types_["model_name"][0] == ["Kim_Vocal_2.onnx", "other/UVR-MDX-NET-Inst_HQ_3.onnx"]
    audio_tip = types_["audio"][1]["tooltip"]
    assert "song" in audio_tip and "suggested" in audio_tip and "Speech alone needs no separation" in audio_tip
    assert "pip install onnxruntime" in types_["model_name"][1]["tooltip"]
    assert EMOSeparateVocals.RETURN_TYPES == ("AUDIO",)
    assert getattr(EMOSeparateVocals, "OUTPUT_NODE", False) is False
    # the checks every registered node passes (the node is registered in nodes/__init__.py later)
    contract.test_node_declaration_is_coherent("EMOSeparateVocals", EMOSeparateVocals)


def test_node_gives_the_librarys_vocals_as_audio(separator_folder, song, caplog):
    progress_values = []
    original = services.Progress.update_absolute

    def record(self, value, total=None, preview_image=None):
        progress_values.append((value, total))
        original(self, value, total, preview_image)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services.Progress, "update_absolute", record)
        (vocals,) = EMOSeparateVocals().separate(song, "Kim_Vocal_2.onnx")
    assert vocals["sample_rate"] == 44100 and vocals["waveform"].shape == (1, 2, 88200)
    expected, _ = separate_vocals(song["waveform"][0], song["sample_rate"], FIXTURE / "tiny_Kim_Vocal_2.onnx",
                                  spec=KIM_VOCAL_2)
    assert torch.equal(vocals["waveform"][0], expected)
    assert progress_values == [(1, 2), (2, 2)]
    # the loaded model is kept for the next clip; another clip gives another result
    separator = next(iter(vocals_node._loaded.values()))
    (again,) = EMOSeparateVocals().separate({"waveform": song["waveform"][:, :, :48000], "sample_rate": 48000},
                                            "Kim_Vocal_2.onnx")
    assert next(iter(vocals_node._loaded.values())) is separator
    assert again["waveform"].shape == (1, 2, 44100)


def test_interrupt_between_chunks(separator_folder, song):
    services.request_interrupt()
    with pytest.raises(services.Interrupted):
        EMOSeparateVocals().separate(song, "Kim_Vocal_2.onnx")
    calls = []

    def interrupt_after_first_chunk(self, value, total=None, preview_image=None):
        calls.append(value)
        services.request_interrupt()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services.Progress, "update_absolute", interrupt_after_first_chunk)
        with pytest.raises(services.Interrupted):
            EMOSeparateVocals().separate(song, "Kim_Vocal_2.onnx")
    assert calls == [1]


def test_missing_and_unknown_models(separator_folder, song):
    with pytest.raises(FileNotFoundError, match=r"EMO Separate Vocals: 'missing.onnx' not found in the audio_separator "
                                                r"model folders.*Kim_Vocal_2\.onnx is in pretrained_models/"
                                                r"audio_separator/ of a Hallo download"):
        EMOSeparateVocals().separate(song, "missing.onnx")
    with pytest.raises(FileNotFoundError, match=r"EMO Separate Vocals: no vocal separation model is installed; "
                                                r"Kim_Vocal_2\.onnx .*models/audio_separator/"):
        EMOSeparateVocals().separate(song, "")
    with pytest.raises(ValueError, match=r"EMO Separate Vocals: separate_vocals: UVR-MDX-NET-Inst_HQ_3\.onnx .* is not a "
                                         r"vocal separation model this pack knows; supported: Kim_Vocal_2\.onnx"):
        EMOSeparateVocals().separate(song, "other/UVR-MDX-NET-Inst_HQ_3.onnx")


def test_bad_audio(separator_folder):
    with pytest.raises(ValueError, match="EMO Separate Vocals: expected an AUDIO input"):
        EMOSeparateVocals().separate(torch.zeros(2, 100), "Kim_Vocal_2.onnx")
    with pytest.raises(ValueError, match="EMO Separate Vocals: the AUDIO is empty"):
        EMOSeparateVocals().separate({"waveform": torch.zeros(1, 2, 0), "sample_rate": 44100}, "Kim_Vocal_2.onnx")
    nan = {"waveform": torch.full((1, 2, 100), float("nan")), "sample_rate": 44100}
    with pytest.raises(ValueError, match="EMO Separate Vocals: separate_vocals: the audio holds NaN"):
        EMOSeparateVocals().separate(nan, "Kim_Vocal_2.onnx")


def test_folder_outside_comfyui_defaults_to_models_audio_separator_and_the_hallo_copy(tmp_path, monkeypatch):
    services.set_model_folders(services.AUDIO_SEPARATOR_FOLDER)
    monkeypatch.chdir(tmp_path)
    assert services.model_folders(services.AUDIO_SEPARATOR_FOLDER) == [
        tmp_path / "models" / "audio_separator", tmp_path / "models" / "hallo" / "audio_separator"]
    hallo_copy = tmp_path / "models" / "hallo" / "audio_separator"
    hallo_copy.mkdir(parents=True)
    (hallo_copy / "Kim_Vocal_2.onnx").write_bytes(b"x")
    assert services.list_model_files(services.AUDIO_SEPARATOR_FOLDER, services.ONNX_EXTENSIONS) == ["Kim_Vocal_2.onnx"]
    assert services.resolve_model_file(services.AUDIO_SEPARATOR_FOLDER, "Kim_Vocal_2.onnx", "N") == \
        hallo_copy / "Kim_Vocal_2.onnx"


def test_registered_inside_comfyui_next_to_extra_model_paths(tmp_path, monkeypatch):
    models = tmp_path / "models"
    extra = tmp_path / "extra_separators"
    for folder in (models / "hallo" / "audio_separator", extra):
        folder.mkdir(parents=True)
    (models / "hallo" / "audio_separator" / "Kim_Vocal_2.onnx").write_bytes(b"x")
    (extra / "mine.onnx").write_bytes(b"x")
    (extra / "mine.pth").write_bytes(b"x")
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models)
    # extra_model_paths.yaml with an 'audio_separator:' entry: the key exists, no extension filter
    folder_paths.folder_names_and_paths = {"audio_separator": ([str(extra)], set())}
    folder_paths.get_folder_paths = lambda name: list(folder_paths.folder_names_and_paths[name][0])

    def get_filename_list(name):
        folders, extensions = folder_paths.folder_names_and_paths[name]
        return sorted({p.relative_to(f).as_posix() for f in map(Path, folders) if f.is_dir()
                       for p in f.rglob("*") if p.is_file() and (not extensions or p.suffix in extensions)})

    folder_paths.get_filename_list = get_filename_list
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.model_management", types.ModuleType("comfy.model_management"))
    services.register_model_folder()
    services.register_model_folder()  # idempotent
    folders, extensions = folder_paths.folder_names_and_paths["audio_separator"]
    assert folders == [str(models / "audio_separator"), str(models / "hallo" / "audio_separator"), str(extra)]
    assert extensions == {".onnx"}
    assert services.list_model_files(services.AUDIO_SEPARATOR_FOLDER, services.ONNX_EXTENSIONS) == [
        "Kim_Vocal_2.onnx", "mine.onnx"]
    del folder_paths.folder_names_and_paths["audio_separator"]
    services.register_model_folder()
    assert folder_paths.folder_names_and_paths["audio_separator"] == (
        [str(models / "audio_separator"), str(models / "hallo" / "audio_separator")], {".onnx"})
