"""`python -m emo assemble` / `emo.weights.assemble`: an EMO checkpoint from component files."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from emo.checkpoints import describe, load_checkpoint
from emo.cli import main
from emo.models.temporal import MotionModule
from emo.weights.assemble import assemble
from tests.emo.weights import formats


@pytest.fixture(scope="module")
def parts(tmp_path_factory, source):
    d = tmp_path_factory.mktemp("parts")
    ctc = formats.wav2vec2_ctc(source)
    ctc.save_pretrained(d / "wav2vec2-base-960h")
    return {
        "sd15": formats.save_safetensors(formats.sd_checkpoint(source), d / "v1-5-pruned-emaonly.safetensors"),
        "wav2vec": d / "wav2vec2-base-960h",
        "motion": formats.save_pickle(formats.motion_state(source, pe_length=24, mid_block=False),
                                      d / "mm_sd_v15.ckpt"),
    }


def _same(a: dict, b: dict, prefix: str, other_prefix: str | None = None, skip=lambda k: False) -> int:
    other_prefix = other_prefix or prefix
    keys = [k for k in a if k.startswith(prefix) and not skip(k)]
    for key in keys:
        assert torch.equal(a[key], b[other_prefix + key[len(prefix):]]), key
    return len(keys)


def test_cli_assembles_a_loadable_checkpoint(parts, source, tmp_path, capsys):
    out = tmp_path / "emo_init.safetensors"
    code = main(["assemble", "--preset", "tiny", "--sd15", str(parts["sd15"]), "--wav2vec", str(parts["wav2vec"]),
                 "--motion-module", str(parts["motion"]), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "loaded: unet <- v1-5-pruned-emaonly.safetensors" in printed and "mm_sd_v15.ckpt" in printed
    model = load_checkpoint(out)
    got, src = model.state_dict(), source.state_dict()
    # pretrained parts, bit-exact
    assert _same(got, src, "reference_net.") == 208
    assert _same(got, src, "backbone.", "reference_net.", skip=lambda k: ".motion_modules." in k) == 208
    assert _same(got, src, "vae.") == 176 and _same(got, src, "audio_encoder.") == 50
    def not_from_the_file(key):
        return ".motion_modules." not in key or ".speed_" in key or key.startswith("backbone.mid_block.")
    assert _same(got, src, "backbone.", skip=not_from_the_file) == 168
    # new layers, initialised as the paper does: the zero-initialised ones keep the pretrained behaviour
    assert torch.count_nonzero(model.face_locator.conv_out.weight) == 0
    assert torch.count_nonzero(model.face_locator.conv_in.weight) > 0
    assert torch.count_nonzero(model.audio_projection.proj1.weight) > 0
    assert torch.equal(model.speed_encoder.bucket_centers, torch.tensor(model.config.speed.bucket_centers))
    modules = [m for m in model.backbone.modules() if isinstance(m, MotionModule)]
    assert len(modules) == 7
    for module in modules:
        for block in module.temporal_transformer.transformer_blocks:
            assert torch.count_nonzero(block.speed_attention.to_out[0].weight) == 0
    # AnimateDiff v1 has no mid-block module: it is a fresh, identity one
    mid = model.backbone.mid_block.motion_modules[0].temporal_transformer
    assert torch.count_nonzero(mid.proj_out.weight) == 0
    assert "mid_block.motion_modules.0" in printed
    text = describe(out)["description"]
    assert "v1-5-pruned-emaonly.safetensors" in text and "wav2vec2-base-960h" in text and "mm_sd_v15.ckpt" in text


def test_new_layers_are_seeded(parts):
    a, _ = assemble("tiny", sd15=parts["sd15"], wav2vec2=parts["wav2vec"], seed=1)
    b, _ = assemble("tiny", sd15=parts["sd15"], wav2vec2=parts["wav2vec"], seed=1)
    c, report = assemble("tiny", sd15=parts["sd15"], wav2vec2=parts["wav2vec"], seed=2)
    assert torch.equal(a.audio_projection.proj1.weight, b.audio_projection.proj1.weight)
    assert not torch.equal(a.audio_projection.proj1.weight, c.audio_projection.proj1.weight)
    # without a motion module every temporal module is fresh: zero output, an identity
    x = torch.randn(3, 32, 4, 4)
    assert torch.equal(a.backbone.down_blocks[0].motion_modules[0](x, num_frames=3), x)
    assert any("all of 7 temporal modules" in note for note in report.notes)
    assert not any(t.is_meta for t in a.state_dict().values())


def test_half_precision_output(parts, tmp_path):
    out = tmp_path / "emo_init_fp16.safetensors"
    assert main(["assemble", "--preset", "tiny", "--sd15", str(parts["sd15"]), "--wav2vec", str(parts["wav2vec"]),
                 "--out", str(out), "--precision", "fp16"]) == 0
    with safe_open(str(out), framework="pt") as handle:
        assert handle.get_tensor("backbone.conv_in.weight").dtype == torch.float16
        assert handle.get_tensor("face_locator.conv_in.weight").dtype == torch.float16


@pytest.mark.parametrize("change, words", [
    ({"--sd15": "missing.safetensors"}, "SD1.5 checkpoint: {tmp}/missing.safetensors does not exist"),
    ({"--out": "{tmp}/emo.ckpt"}, "--out must end in .safetensors"),
    ({"--wav2vec": "SD"}, "wav2vec2: "),
])
def test_cli_errors_are_one_line(parts, tmp_path, capsys, change, words):
    args = {"--sd15": str(parts["sd15"]), "--wav2vec": str(parts["wav2vec"]),
            "--out": str(tmp_path / "emo.safetensors")}
    for key, value in change.items():
        args[key] = str(parts["sd15"]) if value == "SD" else value.format(tmp=tmp_path) if "{" in value \
            else str(tmp_path / value)
    flat = ["assemble", "--preset", "tiny"] + [x for kv in args.items() for x in kv]
    assert main(flat) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emo assemble: error: ") and words.format(tmp=tmp_path) in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "emo.safetensors").exists()
