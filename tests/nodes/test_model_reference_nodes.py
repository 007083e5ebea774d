"""EMOModelLoader, LoadReference and FaceRegionMask on tiny inputs, and their error messages."""

from __future__ import annotations

import pytest
import torch

from emo.model import EMOModel
from nodes.model import EMOModelHandle, EMOModelLoader
from nodes.reference import EMOFaceRegionMask, EMOLoadReference, EMOReference
from tests.helpers import portrait
from tests.nodes.conftest import BUNDLED, CHECKPOINT_NAME


# ---- EMOModelLoader ---------------------------------------------------------------------------
def test_loader_lists_and_loads_the_checkpoint():
    choices = EMOModelLoader.INPUT_TYPES()["required"]["ckpt_name"][0]
    assert choices == sorted([CHECKPOINT_NAME] + BUNDLED)  # and the shipped demo model
    (handle,) = EMOModelLoader().load(CHECKPOINT_NAME, "auto")
    assert isinstance(handle, EMOModelHandle) and isinstance(handle.model, EMOModel)
    assert handle.dtype == torch.float32 and handle.load_device.type == "cpu"  # auto on CPU: fp32
    assert handle.defaults.size == 64 and handle.size_bytes() > 0
    assert not handle.model.training


def test_loader_precision_is_applied():
    (handle,) = EMOModelLoader().load(CHECKPOINT_NAME, "bf16")
    assert handle.dtype == handle.model.dtype == torch.bfloat16


def test_loader_errors_name_the_node_and_the_fix(models_dir):
    with pytest.raises(FileNotFoundError, match=rf"EMO Load Checkpoint: checkpoint 'missing.safetensors' not found "
                                                 rf"in the EMO model folders \({models_dir}\)"):
        EMOModelLoader().load("missing.safetensors", "auto")
    (models_dir / "broken.safetensors").write_bytes(b"not a safetensors file")
    try:
        with pytest.raises(ValueError, match="EMO Load Checkpoint: .*broken.safetensors is not a readable"):
            EMOModelLoader().load("broken.safetensors", "auto")
    finally:
        (models_dir / "broken.safetensors").unlink()
    with pytest.raises(ValueError, match="EMO Load Checkpoint: unknown precision 'fp8'"):
        EMOModelLoader().load(CHECKPOINT_NAME, "fp8")


# ---- LoadReference -------------------------------------------------------------------------------
def test_reference_center_and_pad_crops():
    wide = portrait(48)[:, :, :].repeat(1, 2, 1)[None]  # [1, 48, 96, 3]
    reference, image = EMOLoadReference().prepare(wide, 64, "center", 0.6)
    assert isinstance(reference, EMOReference) and reference.size == 64
    assert image.shape == (1, 64, 64, 3) and torch.equal(image[0], reference.image)
    assert reference.info["box"] == (24, 0, 72, 48)
    reference, _ = EMOLoadReference().prepare(wide, 64, "pad", 0.6)
    assert reference.info["box"] == (0, -24, 96, 72) and reference.info["padded"]


def test_reference_face_crop_centres_the_face(astronaut):
    reference, image = EMOLoadReference().prepare(astronaut[None], 128, "face", 0.6)
    x0, y0, x1, y1 = reference.info["box"]
    face_x0, face_y0, face_x1, face_y1 = reference.info["face_box"]
    assert abs((x0 + x1) / 2 - (face_x0 + face_x1) / 2) <= 1
    assert image.shape == (1, 128, 128, 3) and 0 <= image.min() and image.max() <= 1


def test_reference_uses_the_first_image_of_a_batch(caplog):
    batch = torch.stack([portrait(64, seed=1), portrait(64, seed=2)])
    with caplog.at_level("INFO"):
        reference, _ = EMOLoadReference().prepare(batch, 64, "center")
    assert torch.allclose(reference.image, batch[0], atol=1e-6)
    assert "got 2 images, using the first" in caplog.text
    assert "first image" in EMOLoadReference.INPUT_TYPES()["required"]["image"][1]["tooltip"]


def test_reference_errors():
    with pytest.raises(ValueError, match="EMO Load Reference: no face found in the 64x64 image.*set crop to 'center'"):
        EMOLoadReference().prepare(portrait(64)[None], 64, "face")
    with pytest.raises(ValueError, match="EMO Load Reference: size must be a multiple of 8.*got 60"):
        EMOLoadReference().prepare(portrait(64)[None], 60, "center")
    with pytest.raises(ValueError, match=r"EMO Load Reference: expected an IMAGE batch \[B, H, W, 3\], got \(64, 64, 3\)"):
        EMOLoadReference().prepare(portrait(64), 64, "center")
    with pytest.raises(ValueError, match="EMO Load Reference: the IMAGE batch is empty"):
        EMOLoadReference().prepare(torch.zeros(0, 8, 8, 3), 64, "center")


# ---- FaceRegionMask --------------------------------------------------------------------------------
def test_face_mask_detects_the_face(astronaut):
    (mask,) = EMOFaceRegionMask().make_mask(astronaut[None], 0.2)
    assert mask.shape == (1, 512, 512) and set(mask.unique().tolist()) == {0.0, 1.0}
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert 150 < xs.float().mean() < 300 and 60 < ys.float().mean() < 200  # her face: x 180..270, y 70..160
    (wider,) = EMOFaceRegionMask().make_mask(astronaut[None], 0.6)
    assert wider.sum() > mask.sum()


def test_face_mask_override_skips_detection():
    override = torch.zeros(1, 32, 32)
    override[0, 8:24, 4:20] = 0.9
    (mask,) = EMOFaceRegionMask().make_mask(portrait(64)[None], 0.2, override)
    assert mask.shape == (1, 64, 64)
    assert mask[0, 16:48, 8:40].min() == 1 and mask.sum() == 32 * 32


def test_face_mask_errors_name_the_override_input():
    with pytest.raises(ValueError, match="EMO Face Region Mask: no face found in the 64x64 image; connect a mask "
                                         "to the 'mask' input"):
        EMOFaceRegionMask().make_mask(portrait(64)[None], 0.2)
    with pytest.raises(ValueError, match="EMO Face Region Mask: .*the given mask is empty"):
        EMOFaceRegionMask().make_mask(portrait(64)[None], 0.2, torch.zeros(1, 64, 64))


class _FakeModel(torch.nn.Module):
    """Stands in for an EMOModel on a GPU: records moves instead of making them."""

    def __init__(self, tiny_config):
        super().__init__()
        self.config = tiny_config
        self.weight = torch.nn.Parameter(torch.zeros(1000))  # 4000 bytes
        self.moves = []
        for name in ("reference_net", "backbone", "vae", "audio_encoder"):
            self.add_module(name, torch.nn.Linear(10, 10))

    @property
    def device(self):
        return torch.device(self.moves[-1] if self.moves else "cpu")

    def to(self, device):
        self.moves.append(torch.device(device).type)
        return self


class _RecordingPipeline:
    OFFLOADED = ("reference_net", "backbone", "vae", "audio_encoder")

    def __init__(self, model, device=None, offload=False):
        self.model, self.device, self.offload = model, device, offload


@pytest.fixture
def gpu_handle(monkeypatch, tiny_model):
    """A handle for a fake model on 'cuda', with ComfyUI's services replaced by recorders."""
    from nodes import comfy_services as services
    from nodes import model as model_module

    calls = {"room": [], "emptied": 0, "free": 10**9, "total": 10**10, "low_vram": False, "loaded": [],
             "detached": 0}

    class Patcher:
        def detach(self):
            calls["detached"] += 1

    monkeypatch.setattr(services, "make_room", lambda device, n: calls["room"].append((device.type, n)))
    monkeypatch.setattr(services, "free_memory", lambda device: calls["free"])
    monkeypatch.setattr(services, "total_memory", lambda device: calls["total"])
    monkeypatch.setattr(services, "low_vram", lambda: calls["low_vram"])
    monkeypatch.setattr(services, "empty_cache", lambda: calls.__setitem__("emptied", calls["emptied"] + 1))
    monkeypatch.setattr(services, "load_through_comfyui",
                        lambda patcher, needed: calls["loaded"].append(needed))
    monkeypatch.setattr(model_module, "EMOPipeline", _RecordingPipeline)
    model = _FakeModel(tiny_model.config)

    def make(patcher=None):
        return EMOModelHandle(model=model, name="fake", load_device=torch.device("cuda"),
                              offload_device=torch.device("cpu"), dtype=torch.float32, patcher=patcher)
    return make, model, calls, Patcher


def test_in_comfyui_the_model_loads_through_comfyuis_model_management(gpu_handle):
    make, model, calls, Patcher = gpu_handle
    handle = make(Patcher())
    with handle.loaded(64, 12) as pipeline:
        assert pipeline.model is model and not pipeline.offload
    assert calls["loaded"] == [handle.activation_bytes(64, 12)] and model.moves == []  # ComfyUI moves it
    assert handle.activation_bytes(512, 16) > 10 * handle.activation_bytes(64, 16)


def test_low_vram_runs_the_networks_one_at_a_time(gpu_handle):
    make, model, calls, Patcher = gpu_handle
    calls["low_vram"] = True
    handle = make(Patcher())
    with handle.loaded() as pipeline:
        assert pipeline.offload and pipeline.device == torch.device("cuda")
    assert calls["loaded"] == [] and calls["room"] == [("cuda", handle.largest_network_bytes() +
                                                        handle.activation_bytes())]
    # A model too large for the card takes the same route, in normal mode too.
    calls["low_vram"], calls["total"] = False, 1000
    with handle.loaded() as pipeline:
        assert pipeline.offload


def test_outside_comfyui_gpu_model_makes_room_and_offloads_when_memory_is_short(gpu_handle):
    """No ComfyUI (no patcher): the handle asks to free memory before moving in, and moves the
    weights back to the offload device after a run only when little memory is left."""
    make, model, calls, _ = gpu_handle
    handle = make()
    with handle.loaded() as pipeline:
        assert pipeline.model is model
    assert calls["room"] == [("cuda", int(handle.size_bytes() * 1.3))] and model.moves == ["cuda"]
    calls["free"] = 100
    with handle.loaded():
        pass
    assert model.moves == ["cuda", "cpu"] and calls["emptied"] == 1  # short: offloaded
    with handle.loaded():
        pass
    assert model.moves == ["cuda", "cpu", "cuda", "cpu"]

def test_face_region_mask_of_the_source_photo_is_cropped_like_the_reference():
    """A mask drawn on the full photo (e.g. LoadImageMask of the same file) lines up with the
    prepared reference when the reference is connected."""
    photo = portrait(100)[None].expand(1, 100, 100, 3)[:, :, :].clone()
    wide = torch.cat([photo, photo], dim=2)  # 200 x 100
    reference, image = EMOLoadReference().prepare(wide, 64, "center")
    source_mask = torch.zeros(1, 100, 200)
    source_mask[:, 20:60, 110:150] = 1  # inside the centre square (x 50..150)
    (mask,) = EMOFaceRegionMask().make_mask(image, 0.2, source_mask, reference)
    expected = torch.zeros(64, 64)
    expected[round(20 * 0.64):round(60 * 0.64), round(60 * 0.64):round(100 * 0.64)] = 1
    assert mask.shape == (1, 64, 64)
    assert (mask[0] - expected).abs().sum() <= 2 * 64  # nearest-pixel edges
