"""Stage `vae`: only the autoencoder trains, its reconstruction improves, and the latent scaling
factor is measured and stored in the exported checkpoint."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emo.checkpoints import load_checkpoint
from emo.cli import main
from emo import synthetic
from emo.train.autoencoder import FrameSampler, MixedFrameSampler, SyntheticFrameSampler, autoencoder_loss
from emo.train.config import load_train_config
from tests.emo.train.conftest import train_args
from tests.helpers import REPO


def test_stage_vae_trains_only_the_autoencoder(prepared, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(train_args("demo_vae.yaml", tiny_checkpoint, prepared, out, **{"max_steps": 3, "batch_size": 4,
                                                                                "logging.every": 1})) == 0
    exported = out / "emo-stage-vae.safetensors"
    assert f"wrote {exported}" in capsys.readouterr().out
    before, after = load_file(str(tiny_checkpoint)), load_file(str(exported))
    assert before.keys() == after.keys()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        if key.startswith("vae."):
            continue
        assert not changed, f"stage vae changed {key}"
    assert np.mean([not torch.equal(before[k], after[k]) for k in before if k.startswith("vae.")]) > 0.75
    model = load_checkpoint(exported)
    scale = model.config.vae["scaling_factor"]
    assert scale != pytest.approx(0.18215) and model.vae.config.scaling_factor == pytest.approx(scale)
    with torch.no_grad():  # the scaled latents of dataset frames have about unit spread
        pixels = FrameSampler(prepared, seed=0).batch(0, 16, stream=4)
        latents = model.vae.encode(pixels).latent_dist.mode() * scale
    assert 0.5 < float(latents.std()) < 2.0
    with open(out / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(np.isfinite(float(r["loss"])) for r in rows)


def test_reconstruction_improves(prepared, tiny_model):
    torch.manual_seed(0)
    vae = copy.deepcopy(tiny_model.vae).train().requires_grad_(True)  # the session's model stays as it is
    pixels = FrameSampler(prepared, seed=0).batch(0, 4)
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = autoencoder_loss(vae, pixels, kl_weight=1e-4, generator=torch.Generator().manual_seed(0))
        loss["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss["mse"]))
    assert losses[-1] < 0.5 * losses[0], losses


def test_stage_vae_config():
    config = load_train_config(REPO / "configs" / "train" / "demo_vae.yaml")
    assert config.stage == "vae" and config.autoencoder.kl_weight > 0
    with pytest.raises(ValueError, match="stage must be 1, 2, 3 or vae"):
        load_train_config(REPO / "configs" / "train" / "demo_vae.yaml", ["stage=4"])


def test_synthetic_frames_are_seeded_renders_of_the_training_identities():
    sampler = SyntheticFrameSampler(count=3, size=32, seed=0)
    batch = sampler.batch(5, 8)
    assert batch.shape == (8, 3, 32, 32) and batch.dtype == torch.float32
    assert -1.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    assert torch.equal(batch, SyntheticFrameSampler(count=3, size=32, seed=0).batch(5, 8))  # pure function of the draw
    assert not torch.equal(batch, sampler.batch(6, 8))
    assert not torch.equal(batch, SyntheticFrameSampler(count=3, size=32, seed=1).batch(5, 8))
    # Only identities 0..count-1: every frame's corner (the background) is one of theirs.
    backgrounds = {tuple(synthetic.make_identity(s).background) for s in range(3)}
    frames = torch.cat([sampler.batch(step, 8) for step in range(4)])
    corners = ((frames[:, :, 0, 0] + 1) * 127.5).round().to(torch.int64)
    assert {tuple(c.tolist()) for c in corners} <= backgrounds
    assert len({tuple(c.tolist()) for c in corners}) > 1
    with pytest.raises(ValueError, match="held-out seeds"):
        SyntheticFrameSampler(count=synthetic.EVALUATION_SEED_START + 1, size=32, seed=0)


def test_mixed_batches_take_the_share_from_the_synthetic_faces(prepared):
    base = FrameSampler(prepared, seed=0)
    extra = SyntheticFrameSampler(count=10, size=base.dataset.size, seed=0)
    batch = MixedFrameSampler(base, extra, share=0.25).batch(3, 8)
    assert batch.shape[0] == 8
    assert torch.equal(batch[:6], base.batch(3, 6)) and torch.equal(batch[6:], extra.batch(3, 2))
    assert torch.equal(MixedFrameSampler(base, extra, share=1.0).batch(3, 4), extra.batch(3, 4))


def test_stage_vae_synthetic_settings_are_checked():
    config = load_train_config(REPO / "configs" / "train" / "demo_vae.yaml")
    assert config.autoencoder.synthetic_identities > 1000 and 0 < config.autoencoder.synthetic_share <= 1
    for override, message in (("autoencoder.synthetic_share=0", "synthetic_share must be in"),
                              ("autoencoder.synthetic_identities=-1", "synthetic_identities must be >= 0")):
        with pytest.raises(ValueError, match=message):
            load_train_config(REPO / "configs" / "train" / "demo_vae.yaml", [override])
