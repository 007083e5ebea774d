"""Training on the tiny preset: each stage trains exactly its parameters, the loss falls when
overfitting, save -> resume is bit-identical, conditions drop as at inference, configs check."""

from __future__ import annotations

import copy
import csv
import itertools
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emo.checkpoints import load_checkpoint
from emo.cli import main
from emo.data.layout import open_dataset
from emo.train.config import DropoutConfig, load_train_config
from emo.train.data import DrawBatches, SampleSpec, TrainingSamples, union_box_mask
from emo.train.objective import DenoisingObjective
from emo.train.stages import GROUPS, STAGE_GROUPS, group_of, resolve_stage
from emo.train.trainer import Trainer
from emo.video import probe_video
from tests.emo.train.conftest import FPS, train_args
from tests.helpers import REPO


def test_every_parameter_has_one_group(tiny_model):
    counts = {group: 0 for group in GROUPS}
    for name, _ in tiny_model.named_parameters():
        counts[group_of(name)] += 1
    assert all(counts[g] > 0 for g in GROUPS), counts
    assert group_of("backbone.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight") == "audio_attention"
    assert group_of("backbone.down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0"
                    ".speed_attention.to_q.weight") == "speed_layers"
    assert resolve_stage(2, ["temporal", "audio_layers"]).groups == ("temporal", "audio_attention", "audio_projection")
    with pytest.raises(ValueError, match="always frozen"):
        resolve_stage(1, ["vae"])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_trains_exactly_its_parameters(stage, prepared, tiny_checkpoint, tmp_path, capsys):
    """Run the shipped tiny config through `python -m emo train` and compare the exported
    single-file checkpoint with the one training started from."""
    extra = {1: {"data.use_latents": "false"},  # stage 1 also covers VAE encoding on the fly
             2: {},
             3: {"sampling.every": 2, "ema.enabled": True, "data.face_mask_boxes": "reference"}}[stage]
    out = tmp_path / "run"
    dataset = prepared
    if stage == 2:  # a damaged clip is left out with a reason, the run goes on
        dataset = tmp_path / "dataset"
        shutil.copytree(prepared, dataset)
        broken = next((dataset / "clips").glob("talk-*")) / "audio.npy"
        np.save(broken, np.load(broken)[:5])
    assert main(train_args(f"tiny_stage{stage}.yaml", tiny_checkpoint, dataset, out, **extra)) == 0
    exported = out / f"emo-stage{stage}.safetensors"
    printed = capsys.readouterr().out
    assert f"wrote {exported}" in printed
    assert ("1 clip(s) left out" in printed) == (stage == 2)
    before, after = load_file(str(tiny_checkpoint)), load_file(str(exported))
    assert before.keys() == after.keys()
    load_checkpoint(exported)  # the format the nodes load

    changed: dict[str, list[bool]] = {}
    for key in before:
        if key.endswith((".bucket_centers", ".bucket_radii")):
            continue  # buffers, checked below
        changed.setdefault(group_of(key), []).append(not torch.equal(before[key], after[key]))
    trained = set(STAGE_GROUPS[stage])
    for group, flags in changed.items():
        if group in trained:
            assert np.mean(flags) > 0.75, (group, np.mean(flags))
        else:
            assert not any(flags), f"stage {stage} changed frozen group {group}"
    if stage == 3:  # the speed buckets now come from the dataset's statistics
        buckets = open_dataset(prepared).info["speed_buckets"]
        assert after["speed_encoder.bucket_centers"].tolist() == pytest.approx(buckets["centers"])
        config = load_checkpoint(exported).config
        assert config.speed.bucket_centers == pytest.approx(buckets["centers"])
        defaults = config.defaults  # what the model was trained with, for the pipeline
        assert (defaults.size, defaults.fps, defaults.frames_per_clip, defaults.motion_frames) == (64, FPS, 4, 2)
        assert defaults.speed == pytest.approx(float(np.median(open_dataset(prepared).all_speeds())), abs=1e-4)
        info = probe_video(out / "samples" / "step-0000002.mp4")
        assert info["frames"] == 8 and info["audio_codec"] == "aac" and info["fps"] == pytest.approx(FPS)
    with open(out / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2] and all(np.isfinite(float(r["loss"])) for r in rows)


def _config(checkpoint, dataset, output, *overrides):
    values = [f"init={checkpoint}", f"data.root={dataset}", f"output_dir={output}", "logging.tensorboard=false",
              *overrides]
    return load_train_config(REPO / "configs" / "train" / "tiny_stage2.yaml", values)


def test_loss_drops_when_overfitting_a_fixed_batch(prepared, tiny_checkpoint, tmp_path):
    config = _config(tiny_checkpoint, prepared, tmp_path, "batch_size=1", "optimizer.learning_rate=3e-3",
                     "optimizer.weight_decay=0", "checkpoints.resume=never")
    trainer = Trainer(config).setup()
    batch = next(trainer.batches())
    losses = [trainer.optimizer_step(itertools.repeat(batch))["loss"] for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses


def test_resume_continues_bit_identically(prepared, tiny_checkpoint, tmp_path):
    """Run A goes 3 steps straight. Run B is stopped after step 1 (as by SIGTERM): it saves a
    training state and returns; a new trainer resumes it to step 3. Same weights, EMA, losses."""
    settings = ("max_steps=3", "checkpoints.every=0", "ema.enabled=true", "optimizer.lr_scheduler=linear",
                "optimizer.lr_warmup_steps=1", "batch_size=1")
    a = Trainer(_config(tiny_checkpoint, prepared, tmp_path / "a", *settings))
    path_a = a.train()
    b = Trainer(_config(tiny_checkpoint, prepared, tmp_path / "b", *settings))
    assert b.train(should_stop=lambda: b.progress.step == 1) is None
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-0000001"]  # on stop
    resumed = Trainer(_config(tiny_checkpoint, prepared, tmp_path / "b", *settings)).setup()
    assert resumed.progress.step == 1
    path_b = resumed.train()
    weights_a, weights_b = load_file(str(path_a)), load_file(str(path_b))
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    ema_a, ema_b = a.ema.state_dict()["shadow"], resumed.ema.state_dict()["shadow"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    logs = [(tmp_path / run / "logs" / "metrics.csv").read_text() for run in ("a", "b")]
    strip = [[row.split(",")[:4] for row in log.splitlines()] for log in logs]  # without timings
    assert strip[0] == strip[1] and len(strip[0]) == 4


def _spec(**changes) -> SampleSpec:
    values = dict(frames=4, motion_frames=2, audio=True, speed=True, latents=True, window_radius=2,
                  num_train_timesteps=1000, latent_scale=8, dropout=DropoutConfig())
    values.update(changes)
    return SampleSpec(**values)


def test_samples_depend_only_on_seed_and_draw(prepared):
    dataset = open_dataset(prepared)
    one, two = TrainingSamples(dataset, _spec(), seed=3), TrainingSamples(dataset, _spec(), seed=3)
    for draw in (0, 5, 17):  # 17 lies in the third epoch (6 windows per epoch)
        a, b = one[draw], two[draw]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(one[0]["noise"], one[6]["noise"])  # a new epoch draws new noise
    sample = one[0]
    assert sample["target"].shape == (4, 4, 8, 8) and sample["motion"].shape == (2, 4, 8, 8)
    assert sample["audio"].shape == (4, 5, 2, 32) and sample["speed"].shape == (6,)
    single = list(DrawBatches(4, 1, 0, first_step=1, last_step=3))
    split = [list(DrawBatches(2, 2, rank, first_step=1, last_step=3)) for rank in (0, 1)]
    assert single == [a + b for a, b in zip(*split)] == [[4, 5, 6, 7], [8, 9, 10, 11]]


def test_face_mask_margin_grows_the_union_by_a_random_seeded_amount(prepared):
    dataset = open_dataset(prepared)
    tight = TrainingSamples(dataset, _spec(), seed=3)
    grown = TrainingSamples(dataset, _spec(face_mask_margin=(0.1, 0.4)), seed=3)
    areas = []
    for draw in range(6):
        inner, outer = tight[draw]["face_mask"], grown[draw]["face_mask"]
        assert torch.all(outer >= inner) and outer.sum() > inner.sum()  # the union, and more around it
        areas.append(float(outer.sum() / inner.sum()))
        assert torch.equal(outer, grown[draw]["face_mask"])  # seeded by the draw
    assert len(set(areas)) > 1 and 1.2 ** 2 < min(areas) and max(areas) < 1.8 ** 2 + 0.2
    assert torch.equal(tight[2]["noise"], TrainingSamples(dataset, _spec(), seed=3)[2]["noise"])
    with pytest.raises(ValueError, match="face_mask_margin must be"):
        load_train_config(REPO / "configs" / "train" / "tiny_stage2.yaml", ["data.face_mask_margin=[0.3, 0.1]"])
    with pytest.raises(ValueError, match="two numbers"):
        load_train_config(REPO / "configs" / "train" / "tiny_stage2.yaml", ["data.face_mask_margin=0.2"])



def test_reference_face_mask_is_the_reference_frames_box_alone(prepared):
    """data.face_mask_boxes=reference: the mask is drawn as inference draws it, from the reference
    frame's box, so its extent no longer tells how far the head moves in the clip."""
    dataset = open_dataset(prepared)
    clip_masks = TrainingSamples(dataset, _spec(), seed=3)
    samples = TrainingSamples(dataset, _spec(face_mask_boxes="reference"), seed=3)
    differs = 0
    for draw in range(6):
        sample = samples[draw]
        clip = dataset.clips[samples.window_of(draw)[0]]
        latents = torch.from_numpy(np.array(dataset.array(clip, "latents"))).float()
        index = [i for i in range(len(latents)) if torch.equal(latents[i], sample["reference"])][0]
        box = np.asarray(dataset.array(clip, "boxes")[index:index + 1])
        assert torch.equal(sample["face_mask"], union_box_mask(box, dataset.size))
        assert torch.equal(sample["noise"], clip_masks[draw]["noise"])  # the other draws are unchanged
        differs += not torch.equal(sample["face_mask"], clip_masks[draw]["face_mask"])
    assert differs > 0
    with pytest.raises(ValueError, match="face_mask_boxes must be clip or reference"):
        load_train_config(REPO / "configs" / "train" / "tiny_stage2.yaml", ["data.face_mask_boxes=first"])

@pytest.fixture(scope="module")
def objective_and_batch(tiny_model, prepared):
    model = copy.deepcopy(tiny_model)
    stage = resolve_stage(3, ["temporal", "audio_layers", "reference_net", "speed_layers", "speed_encoder"])
    objective = DenoisingObjective(model, stage)
    samples = TrainingSamples(open_dataset(prepared), _spec(frames=2, motion_frames=1,
                                                            dropout=DropoutConfig(0, 0, 0, 0)), seed=0)
    batch = torch.utils.data.default_collate([samples[0]])
    return objective, batch


def _gradients(objective, batch):
    objective.zero_grad(set_to_none=True)
    loss = objective(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(objective_and_batch):
    objective, batch = objective_and_batch
    loss, grads = _gradients(objective, batch)
    objective.backbone.gradient_checkpointing = objective.reference_net.gradient_checkpointing = True
    try:
        loss_ckpt, grads_ckpt = _gradients(objective, batch)
    finally:
        objective.backbone.gradient_checkpointing = objective.reference_net.gradient_checkpointing = False
    assert torch.equal(loss, loss_ckpt) and grads.keys() == grads_ckpt.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ckpt[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("condition, inputs", [("drop_audio", ["audio"]), ("drop_reference", ["reference"]),
                                               ("drop_motion", ["motion"])])
def test_dropped_condition_has_no_effect(objective_and_batch, condition, inputs):
    """As at inference: dropped audio = zero tokens, dropped reference = no reference-attention,
    dropped motion frames = zeros. The loss must not depend on the dropped input, and must
    depend on it when it is kept."""
    objective, batch = objective_and_batch
    other = dict(batch)
    for key in inputs:
        other[key] = batch[key] + torch.randn_like(batch[key])
    with torch.no_grad():
        assert objective(batch) != objective(other)
        dropped = {**batch, condition: torch.ones_like(batch[condition])}
        dropped_other = {**other, condition: torch.ones_like(batch[condition])}
        assert objective(dropped) == objective(dropped_other)


def test_config_errors_are_one_line(prepared, tiny_checkpoint, tmp_path, capsys):
    cases = [
        ({"batch_size": 3, "gradient_accumulation_steps": 2}, "batch_size 3 must be divisible"),
        ({"optimizer.lr": 1}, "unknown key(s) ['optimizer.lr']"),
        ({"init": tmp_path / "missing.safetensors"}, "init checkpoint"),
        ({"data.size": 128}, "prepared at 64"),
        ({"optimizer.name": "adamw8bit"}, "bitsandbytes"),
        ({"output_dir": tmp_path / "stage2-run"}, "is a stage 2 state"),  # resuming another stage's state
    ]
    state = tmp_path / "stage2-run" / "checkpoints" / "step-0000001"
    state.mkdir(parents=True)
    (state / "train_config.yaml").write_text("stage: 2\n")
    for overrides, message in cases:
        code = main(train_args("tiny_stage1.yaml", tiny_checkpoint, prepared, tmp_path / "run", **overrides))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("emo train: error:") and message in err[0], err


def test_shipped_configs_carry_the_paper_values():
    for stage in (1, 2, 3):
        paper = load_train_config(REPO / "configs" / "train" / f"stage{stage}.yaml")
        tiny = load_train_config(REPO / "configs" / "train" / f"tiny_stage{stage}.yaml")
        assert paper.stage == tiny.stage == stage
        assert paper.data.size == 512 and paper.optimizer.learning_rate == 1e-5  # paper §4.1
        assert paper.batch_size == (48 if stage == 1 else 4)
        if stage > 1:
            assert (paper.data.frames_per_clip, paper.data.motion_frames) == (12, 4)
        assert resolve_stage(stage, paper.trainable).groups == STAGE_GROUPS[stage]
