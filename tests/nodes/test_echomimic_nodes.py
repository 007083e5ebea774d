"""EchoMimic in the node graph: EMO Load EchoMimic on a tiny pretrained_weights folder in the
released layout (the parity fixture's weights under the real names) in models/echomimic, EMO Audio
Encode (whisper features), EMO Sampler (the whole video in context windows), EMO Sample To Video,
the shipped echomimic workflows, EMO Load Checkpoint on a converted file, and the loader's errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from emo.checkpoints import save_checkpoint
from emo.families.echomimic import convert as echomimic_convert
from emo.families.echomimic.family import WhisperAudioFeatures
from emo.families.echomimic.whisper import WhisperDims, WhisperEncoder
from emo.pipeline import progress_total
from emo.video import probe_video
from nodes import NODE_CLASS_MAPPINGS
from nodes import comfy_services as services
from nodes.audio import EMOAudioEncode
from nodes.model import EMOEchoMimicLoader, load_echomimic, load_model
from nodes.reference import EMOLoadReference
from nodes.sample_to_video import EMOSampleToVideo
from nodes.sampler import EMOSampler
from tests.emo.families.echomimic.fixtures import make_tiny_echomimic_folder, motion_heads
from tests.helpers import REPO, box_mask, portrait, sine
from tests.nodes.core_nodes import make_core_nodes
from tests.nodes.workflow_runner import run, with_overrides

SIZE = 96  # the fixture model's pixels (12x12 latents)
WEIGHTS = "pretrained_weights/"  # the folder name the shipped workflows use
WORKFLOWS = REPO / "workflows"


@pytest.fixture(scope="module")
def echomimic_root(tmp_path_factory):
    """models/echomimic with the tiny pretrained_weights/ (V1 and acc files) in it; (root, json)."""
    root = tmp_path_factory.mktemp("models") / "echomimic"
    _, meta = make_tiny_echomimic_folder(root / "pretrained_weights")
    return root, meta


@pytest.fixture(autouse=True)
def echomimic_models(echomimic_root, comfy_environment, monkeypatch):
    root, meta = echomimic_root
    services.set_model_folders(services.ECHOMIMIC_FOLDER, root)
    # the fixture's motion modules have fewer heads than the released 8 (not in the files)
    monkeypatch.setattr(echomimic_convert, "MOTION_HEADS", motion_heads(meta))
    yield root


@pytest.fixture(scope="module")
def acc_model(echomimic_root):
    services.set_model_folders(services.ECHOMIMIC_FOLDER, echomimic_root[0])
    try:
        return load_echomimic(WEIGHTS, "acc", "fp32", motion_heads=motion_heads(echomimic_root[1]))
    finally:
        services.reset_model_folders()


def voice(seconds: float) -> dict:
    return {"waveform": sine(seconds, 22050, channels=2)[None], "sample_rate": 22050}


def test_echomimic_loader_lists_pretrained_weights_folders(echomimic_models, tmp_path):
    assert EMOEchoMimicLoader.INPUT_TYPES()["required"]["folder_name"][0] == [WEIGHTS]
    assert EMOEchoMimicLoader.CATEGORY == "EMO/loaders" and "EMOEchoMimicLoader" in NODE_CLASS_MAPPINGS
    other = tmp_path / "echomimic"
    shutil.copytree(echomimic_models / "pretrained_weights", other / "v1" / "pretrained_weights")
    (other / "hallo").mkdir()
    (other / "hallo" / "net.pth").write_bytes(b"")  # not an EchoMimic folder: not listed
    (other / "reference_unet.pth").write_bytes(b"")  # the models folder itself holds the files
    services.set_model_folders(services.ECHOMIMIC_FOLDER, other)
    assert services.list_model_folders(services.ECHOMIMIC_FOLDER, services.ECHOMIMIC_MARKERS) == [
        "./", "v1/pretrained_weights/"]
    assert services.resolve_model_folder(services.ECHOMIMIC_FOLDER, "./", "node") == other


def test_echomimic_loader_variants_carry_their_defaults(acc_model):
    assert acc_model.model.config.family == "echomimic" and acc_model.info["variant"] == "acc"
    assert (acc_model.defaults.steps, acc_model.defaults.guidance_scale) == (6, 1.0)
    assert (acc_model.defaults.fps, acc_model.defaults.frames_per_clip, acc_model.defaults.motion_frames) == (24, 12, 3)
    v1 = EMOEchoMimicLoader().load(WEIGHTS, "V1", "fp32")[0]
    assert (v1.defaults.steps, v1.defaults.guidance_scale) == (30, 2.5) and v1.info["variant"] == "v1"
    assert v1.patcher is None  # outside ComfyUI; inside, a ModelPatcher as for every EMO_MODEL


def _reference():
    reference, _ = EMOLoadReference().prepare(portrait(SIZE)[None], SIZE, "center")
    return reference


def test_echomimic_nodes_encode_sample_and_stream(acc_model, monkeypatch):
    """Audio Encode gives whisper features of 24 fps frames; the sampler denoises the whole
    video in windows with acc's defaults (steps 0 / cfg -1), counting every window of every
    step; Sample To Video streams the same frames into a file."""
    encoded = EMOAudioEncode().encode(voice(1.0), acc_model, 0.0)["result"]
    features, frame_count = encoded[0], encoded[1]
    assert isinstance(features, WhisperAudioFeatures) and features.fps == 24.0
    assert frame_count == features.num_frames == 24  # ceil(1.0 s x 24 fps)
    assert features.tokens([0]).shape == (1, 10 * acc_model.model.audio_encoder.num_layers, 384)

    bars = []
    original = services.Progress.__init__

    def remember(self, total):
        original(self, total)
        bars.append(self)

    monkeypatch.setattr(services.Progress, "__init__", remember)
    mask = box_mask(SIZE)[None]
    out = EMOSampler().sample(acc_model, _reference(), features, 5, 0, -1.0, "ddim", 0, -1, face_mask=mask)
    frames, fps = out["result"]
    assert frames.shape == (24, SIZE, SIZE, 3) and fps == 24.0 and torch.isfinite(frames).all()
    sampler_bar = bars[-1]
    resolved = acc_model.defaults
    assert sampler_bar.total == progress_total(acc_model.model, 24, _settings(6, 1.0)) == 6 * 3
    assert sampler_bar.current == sampler_bar.total
    assert frames.std() > 0.01

    path, _, preview, _ = EMOSampleToVideo().sample(acc_model, _reference(), features, 5, 0, -1.0, "ddim", 0, -1,
                                                    "EMO/echomimic", "video/h264-mp4", 19, True, 4,
                                                    face_mask=mask, audio=encoded[2])["result"]
    info = probe_video(path)
    assert info["frames"] == 24 and info["fps"] == pytest.approx(24.0) and preview.shape[0] == 4
    assert resolved.size == 512  # the widgets at 0 / -1 took everything but the size from the model


def _settings(steps, cfg):
    from emo.pipeline import GenerationSettings

    return GenerationSettings(size=SIZE, fps=24.0, frames_per_clip=12, motion_frames=3, steps=steps,
                              guidance_scale=cfg)


@pytest.mark.parametrize("name, variant, steps", [("echomimic_talking_photo", "V1", 2),
                                                   ("echomimic_acc_talking_photo", "acc", 0)])
def test_echomimic_shipped_workflow_runs(name, variant, steps, comfy_environment, tmp_path):
    """The shipped workflow as it is, on the tiny folder under the name its note gives, with a
    smaller reference and 0.5 s of the sample speech (V1 with 2 steps instead of 30)."""
    from emo.audio import load_audio

    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert api["1"]["class_type"] == "EMOEchoMimicLoader" and api["1"]["inputs"]["variant"] == variant
    samples = tmp_path / "input"
    services.install_samples(samples)
    prompt = with_overrides(api, {"EMOEchoMimicLoader": {"precision": "fp32"}, "EMOLoadReference": {"size": SIZE},
                                  "EMOAudioEncode": {"duration_seconds": 0.5}, "EMOSampler": {"steps": steps}})
    result = run(prompt, {**NODE_CLASS_MAPPINGS, **make_core_nodes(samples)}, workflow=ui)
    writer = next(i for i, n in prompt.items() if n["class_type"] == "EMOVideoCombine")
    path = Path(result.outputs[writer][0])
    info = probe_video(path)
    assert info["frames"] == math.ceil(0.5 * 24) and info["fps"] == pytest.approx(24.0)
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    waveform, rate = load_audio(samples / api["3"]["inputs"]["audio"])
    assert waveform.shape[-1] / rate > 0.5  # the sample speech, trimmed by Audio Encode
    assert info["audio_seconds"] == pytest.approx(0.5, abs=0.05)
    assert json.loads(info["metadata"]["workflow"]) == ui


def test_echomimic_converted_checkpoint_loads_in_emo_load_checkpoint(acc_model, tmp_path):
    """`emo convert` output in models/emo: EMO Load Checkpoint gives the same model, and the
    same video as the folder for the same seed."""
    folder = tmp_path / "emo"
    save_checkpoint(acc_model.model, folder / "echomimic_acc.safetensors")
    services.set_models_dir(folder)
    converted = load_model("echomimic_acc.safetensors", "fp32")
    assert converted.model.config == acc_model.model.config
    features = EMOAudioEncode().encode(voice(0.4), converted, 0.0)["result"][0]
    mask = box_mask(SIZE)[None]
    ours = EMOSampler().sample(converted, _reference(), features, 3, 2, -1.0, "ddim", 4, 1, face_mask=mask)
    theirs = EMOSampler().sample(acc_model, _reference(), features, 3, 2, -1.0, "ddim", 4, 1, face_mask=mask)
    difference = (ours["result"][0] - theirs["result"][0]).abs().max().item()
    assert difference < 1e-4, difference


# ---- bad input --------------------------------------------------------------------------------------
def _broken_copy(echomimic_models, tmp_path) -> Path:
    root = tmp_path / "echomimic"
    shutil.copytree(echomimic_models / "pretrained_weights", root / "pretrained_weights")
    services.set_model_folders(services.ECHOMIMIC_FOLDER, root)
    return root / "pretrained_weights"


def test_echomimic_loader_names_a_missing_file_and_its_place(echomimic_models, tmp_path):
    folder = _broken_copy(echomimic_models, tmp_path)
    (folder / "audio_processor" / "whisper_tiny.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"^EMO Load EchoMimic: .*audio_processor/whisper_tiny\.pt \(the "
                                                r"whisper-tiny audio encoder\) goes at .*pretrained_weights"):
        load_echomimic(WEIGHTS, "V1", "fp32")
    (folder / "denoising_unet_acc.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"denoising_unet_acc\.pth .* choose variant 'v1'"):
        load_echomimic(WEIGHTS, "acc", "fp32")
    with pytest.raises(FileNotFoundError, match="EMO Load EchoMimic: folder 'elsewhere/' not found"):
        load_echomimic("elsewhere/", "V1", "fp32")
    with pytest.raises(ValueError, match="unknown variant 'v2'"):
        load_echomimic(WEIGHTS, "v2", "fp32")


def test_echomimic_loader_refuses_another_familys_file(echomimic_models, tmp_path):
    folder = _broken_copy(echomimic_models, tmp_path)
    # Hallo's net.pth under EchoMimic's reference UNet name
    hallo = {"reference_unet.conv_in.weight": torch.zeros(4, 4, 3, 3), "denoising_unet.conv_in.weight":
             torch.zeros(4, 4, 3, 3), "audioproj.proj1.weight": torch.zeros(4, 4)}
    torch.save(hallo, folder / "reference_unet.pth")
    with pytest.raises(ValueError, match=r"^EMO Load EchoMimic: .*reference_unet\.pth is Hallo's net\.pth"):
        load_echomimic(WEIGHTS, "V1", "fp32")


def test_echomimic_loader_names_wrong_whisper_dimensions(echomimic_models, tmp_path):
    folder = _broken_copy(echomimic_models, tmp_path)
    dims = WhisperDims(n_mels=128, n_audio_state=384, n_audio_head=6, n_audio_layer=1)  # large-v3's 128 mel bands
    state = {f"encoder.{k}": v for k, v in WhisperEncoder(dims).state_dict().items()}
    torch.save({"dims": vars(dims), "model_state_dict": state}, folder / "audio_processor" / "whisper_tiny.pt")
    with pytest.raises(ValueError, match=r"^EMO Load EchoMimic: .*whisper_tiny\.pt: wrong whisper dimensions: "
                                         r"EchoMimic needs whisper-tiny's encoder \(n_mels 80"):
        load_echomimic(WEIGHTS, "V1", "fp32")


def test_echomimic_sampler_refuses_another_models_audio(acc_model, emo_model, voice):
    """wav2vec2 features (an EMO model's Audio Encode) into an EchoMimic model: one clear error."""
    features = EMOAudioEncode().encode(voice, emo_model, 24.0)["result"][0]
    with pytest.raises(ValueError, match="EMO Sampler: EchoMimic models need audio encoded by their own whisper"):
        EMOSampler().sample(acc_model, _reference(), features, 0, 1, -1.0, "ddim", 4, 1,
                            face_mask=box_mask(SIZE)[None])
