"""EchoMimic -> our model: every full-size key maps, and each parity fixture's denoising step
(windows, blending, guidance, the DDIM update) is reproduced from the numbers EchoMimic's own
code computed (shared/fixtures/echomimic_parity, README)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from emo.families.echomimic.audio import chunk_indices, whisper_features
from emo.families.echomimic.convert import build_echomimic_model, echomimic_config, load_echomimic_folder
from emo.families.echomimic.family import WhisperAudioFeatures
from emo.families.echomimic.whisper import WhisperDims, encoder_state
from emo.model import EMOModel
from emo.pipeline import EMOPipeline, GenerationSettings
from emo.schedulers import make_scheduler
from emo.windows import context_windows
from tests.emo.families.echomimic.fixtures import WEIGHT_KEYS, fixture_files, make_pretrained_weights, part, read_fixture
from tests.helpers import missing_fixture

FIXTURES = fixture_files()


def _config(meta: dict, **option_changes):
    modules = meta["modules"]
    motion = modules["denoising_unet"]["unet_additional_kwargs"]["motion_module_kwargs"]
    config = echomimic_config(
        modules["denoising_unet"]["base_unet_config"],
        face_locator_channels=modules["face_locator"]["kwargs"]["block_out_channels"],
        whisper=dataclasses.asdict(WhisperDims.from_checkpoint(modules["whisper"]["dims"], "fixture")),
        vae=modules["vae_for_crosscheck_only"]["from_config"], variant=meta["run"]["pipeline_kind"],
        motion_heads=motion["num_attention_heads"], motion_max_len=motion["temporal_position_encoding_max_len"])
    return dataclasses.replace(config, family_options={**config.family_options, **option_changes})


def _states(tensors: dict) -> dict:
    return {"reference_unet": part(tensors, "reference_unet"), "denoising_unet": part(tensors, "denoising_unet"),
            "face_locator": part(tensors, "face_locator"), "whisper": encoder_state(part(tensors, "whisper"), "fixture")}


@pytest.fixture(scope="module", params=FIXTURES or [None], ids=[p.stem for p in FIXTURES] or ["none"])
def fixture(request):
    if request.param is None:
        missing_fixture("EchoMimic parity fixtures (echomimic_parity/*.safetensors)")
    tensors, meta = read_fixture(request.param)
    torch.manual_seed(0)
    model = build_echomimic_model(_states(tensors), _config(meta))
    return {"t": tensors, "meta": meta, "model": model, "path": request.param}


def _step(model, t, meta, guidance: float | None = None):
    """One step of EchoMimic's sampler on the fixture's inputs, through our pipeline."""
    run = meta["run"]
    pipe = EMOPipeline(model)
    family = model.family
    guidance = float(t["input.guidance_scale"]) if guidance is None else guidance
    with torch.no_grad():
        features = whisper_features(model.audio_encoder, t["input.waveform"])
        indices = chunk_indices(features.shape[0], run["fps"])[:run["video_length"]]
        audio = WhisperAudioFeatures(features=features, fps=float(run["fps"]), waveform=t["input.waveform"][None],
                                     sample_rate=16000, indices=indices)
        use_cfg = guidance > 1.0
        mask = t["input.face_mask_tensor"][0, 0, 0]
        video = family.video_conditioning(model, mask=mask, face_embedding=None, motion_frames=0, region_scales=None,
                                          use_cfg=use_cfg)
        reference = model.reference_net(t["input.ref_latents"][:, None])
        settings = GenerationSettings(size=run["width"], fps=run["fps"], frames_per_clip=run["context_frames"],
                                      motion_frames=run["context_overlap"], steps=run["num_inference_steps"],
                                      guidance_scale=guidance).resolve(model.config.defaults)
        scheduler = make_scheduler("ddim", model.config.scheduler)
        scheduler.set_timesteps(run["num_inference_steps"])
        timestep = t["input.timestep"]
        out = pipe.window_prediction(family.clip_schedule(model.config), settings, scheduler, t["input.latents"],
                                     timestep, run["step_index"], reference, video, (False, True) if use_cfg else None,
                                     audio)
        out["latents_next"] = scheduler.step(out["guided"], timestep, t["input.latents"], eta=0.0).prev_sample
        out["timesteps"] = scheduler.timesteps
        out["face_features"] = video.face_features
        out["reference"] = reference
    return out


def _close(actual, expected, atol, rtol=1e-4):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.float() - expected.float()).abs().max().item()
    assert torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol), f"max abs diff {diff:.3g}"


def test_echomimic_windows_and_schedule_match(fixture):
    t, meta = fixture["t"], fixture["meta"]
    run = meta["run"]
    schedule = fixture["model"].family.clip_schedule(fixture["model"].config)
    windows = context_windows(run["video_length"], run["context_frames"], run["context_overlap"], schedule,
                              step=run["step_index"])
    assert torch.equal(torch.tensor(windows), t["inter.context_windows"])
    scheduler = make_scheduler("ddim", fixture["model"].config.scheduler)
    scheduler.set_timesteps(run["num_inference_steps"])
    assert torch.equal(scheduler.timesteps, t["inter.timesteps_all"])


def test_echomimic_face_locator_and_reference_bank_match(fixture):
    t, meta = fixture["t"], fixture["meta"]
    out = _step(fixture["model"], t, meta)
    _close(out["face_features"][1:], t["inter.face_locator_out"][:, :, 0], 1e-5, 1e-5)
    assert torch.count_nonzero(out["face_features"][:1]) == 0  # the unconditional row gets zeros
    banks = {k[len("inter.bank."):]: v for k, v in t.items() if k.startswith("inter.bank.")}
    assert banks
    for path, bank in banks.items():  # ours are rounded to fp16 as EchoMimic's reader rounds them
        _close(out["reference"].attention[f"{path}.attn1"], bank.to(torch.float16).float(), 1e-3, 1e-3)


def test_echomimic_denoising_step_matches(fixture):
    t, meta = fixture["t"], fixture["meta"]
    out = _step(fixture["model"], t, meta)
    assert torch.equal(out["counter"].long(), t["inter.counter"].flatten().long())
    _close(out["sum"], t["inter.noise_pred_sum"], 1e-4)
    _close(out["prediction"], t["output.noise_pred"], 1e-4)
    _close(out["guided"], t["output.noise_pred_guided"], 1e-4)
    _close(out["latents_next"], t["output.latents_next"], 5e-5)


def test_echomimic_without_guidance_keeps_v1s_window_sum(fixture):
    """V1 with guidance <= 1 never divides the window sum by the counter (a V1 quirk)."""
    t, meta = fixture["t"], fixture["meta"]
    if "output.variant.cfg1.noise_pred" not in t:
        pytest.skip(f"{fixture['path'].name} has no cfg1 variant")
    out = _step(fixture["model"], t, meta, guidance=1.0)
    _close(out["guided"], t["output.variant.cfg1.noise_pred_guided"], 1e-4)
    _close(out["latents_next"], t["output.variant.cfg1.latents_next"], 5e-5)


def test_echomimic_fp32_bank_variant(fixture):
    t, meta = fixture["t"], fixture["meta"]
    if "output.variant.bank_fp32.noise_pred" not in t:
        pytest.skip(f"{fixture['path'].name} has no bank_fp32 variant")
    torch.manual_seed(0)
    model = build_echomimic_model(_states(t), _config(meta, reference_bank_fp16=False))
    out = _step(model, t, meta)
    _close(out["prediction"], t["output.variant.bank_fp32.noise_pred"], 2e-5, 1e-5)


def test_echomimic_parity_is_sensitive_to_the_audio_scale(fixture):
    """Guard against a test that cannot fail: EchoMimic's x3 on the audio attention matters."""
    t, meta = fixture["t"], fixture["meta"]
    torch.manual_seed(0)
    model = build_echomimic_model(_states(t), _config(meta, audio_attention_scale=1.0))
    out = _step(model, t, meta)
    assert not torch.allclose(out["prediction"], t["output.noise_pred"], atol=1e-3)


def test_echomimic_full_size_keys_all_map():
    path = WEIGHT_KEYS / "echomimic_v1_keys.json"
    if not path.is_file():
        missing_fixture(str(path))
    manifest = json.loads(path.read_text())
    sd15 = json.loads((WEIGHT_KEYS / "sd15_unet_config.json").read_text())
    config = echomimic_config(sd15, face_locator_channels=(16, 32, 96, 256), whisper=dataclasses.asdict(WhisperDims()),
                              vae=EMOModel.from_preset("sd15", device="meta").config.vae)
    with torch.device("meta"):
        model = EMOModel(config)
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    prefixes = {"reference_unet": "reference_net.", "denoising_unet": "backbone.", "face_locator": "face_locator."}
    for part_name, keys in manifest.items():
        if part_name not in prefixes:
            continue
        for key, shape in keys.items():
            assert expected.get(prefixes[part_name] + key) == list(shape), key
    mapped = {prefixes[p] + k for p, keys in manifest.items() if p in prefixes for k in keys}
    left = sorted(k for k in expected if k not in mapped and not k.startswith(("audio_encoder.", "vae.")))
    assert left == [k for k in left if k.startswith(("reference_net.conv_norm_out.", "reference_net.conv_out."))]
    assert not any(".speed_" in k for k in expected) and model.audio_projection is None


def test_echomimic_pretrained_weights_folder_loads_and_generates(fixture, tmp_path):
    """The user's unchanged folder (written from the fixture under the released names) -> the
    same model, through the pipeline: the video has one frame per audio frame, deterministic."""
    from diffusers import AutoencoderKL

    from tests.helpers import box_mask, portrait

    t, meta = fixture["t"], fixture["meta"]
    vae = tmp_path / "vae"
    torch.manual_seed(1)
    AutoencoderKL(**meta["modules"]["vae_for_crosscheck_only"]["from_config"]).save_pretrained(vae)
    folder = make_pretrained_weights(fixture["path"], tmp_path / "pretrained_weights", vae=vae)
    motion = meta["modules"]["denoising_unet"]["unet_additional_kwargs"]["motion_module_kwargs"]
    model = load_echomimic_folder(folder, motion_heads=motion["num_attention_heads"])
    assert model.config.family == "echomimic" and model.config.defaults.steps == 30
    assert torch.equal(model.backbone.conv_in.weight, t["denoising_unet.conv_in.weight"])
    out = _step(model, t, meta)
    _close(out["guided"], t["output.noise_pred_guided"], 1e-4)

    pipe = EMOPipeline(model)
    size = meta["run"]["width"]
    audio = pipe.encode_audio(t["input.waveform"][None], 16000, 24.0)
    assert audio.num_frames == 8  # ceil(0.303 s x 24 fps): the audio's own length
    settings = GenerationSettings(size=size, steps=2, frames_per_clip=4, motion_frames=1, seed=3)
    frames = pipe(portrait(size), audio, face_mask=box_mask(size), settings=settings).frames
    assert frames.shape == (8, size, size, 3) and torch.isfinite(frames).all()
    again = pipe(portrait(size), audio, face_mask=box_mask(size), settings=settings).frames
    assert torch.equal(frames, again)
