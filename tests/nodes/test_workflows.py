"""The shipped workflows: each API-format file is validated against the nodes and executed through
the node classes, its UI-format twin describes the same graph, the files are what
scripts/make_workflows.py writes, and they name only files the pack ships or installs (or, for
the real-model workflows, the user's model files their note places).

The demo workflows run as shipped (the bundled demo model on the sample talker the pack copies
into the input folder), with fewer steps; the real-model workflows run with the tiny checkpoint
in place of the user's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emo.video import probe_video
from nodes import NODE_CLASS_MAPPINGS
from nodes import comfy_services as services
from tests.helpers import REPO
from tests.nodes.conftest import CHECKPOINT_NAME
from tests.nodes.core_nodes import make_core_nodes
from tests.nodes.workflow_runner import WorkflowError, run, validate, with_overrides
from scripts import make_workflows

WORKFLOWS = REPO / "workflows"
NAMES = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))
DEMO = [name for name in NAMES if json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())["1"]["inputs"]
        .get("ckpt_name") == make_workflows.DEMO_CHECKPOINT]
# Files a real-model workflow may name that the pack does not ship: the user's weights, which
# its note says where to put.
USER_FILES = {make_workflows.USER_CHECKPOINT, make_workflows.HALLO_NET, make_workflows.HALLO_VAE,
              make_workflows.HALLO_WAV2VEC2, make_workflows.ECHOMIMIC_WEIGHTS}
FEW_STEPS = 2


def test_every_workflow_is_shipped_in_both_formats_with_a_thumbnail():
    assert set(DEMO) == {"emo_long_audio", "emo_singing_portrait", "emo_talking_portrait", "emo_upscale_chain"}
    assert {"hallo_talking_photo", "emo_checkpoint_photo", "echomimic_talking_photo",
            "echomimic_acc_talking_photo"} <= set(NAMES)
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == NAMES
    assert sorted(p.stem for p in WORKFLOWS.glob("*.jpg")) == NAMES  # the Templates browser's thumbnails
    # ComfyUI serves the first of these folders as the pack's templates: only workflows/ exists.
    served = [d for d in ("example_workflows", "example", "examples", "workflow", "workflows") if (REPO / d).is_dir()]
    assert served == ["workflows"]
    assert {p.suffix for p in WORKFLOWS.rglob("*") if p.is_file()} <= {".json", ".jpg"}


def _named_files(prompt: dict) -> set[str]:
    return {value for node in prompt.values() for value in node["inputs"].values()
            if isinstance(value, str) and (value.endswith("/") or "." in value)
            and value.rsplit(".", 1)[-1].lower() in {"safetensors", "pth", "ckpt", "png", "jpg", "wav", "mp3", "flac", ""}}


@pytest.mark.parametrize("name", NAMES)
def test_workflows_name_only_shipped_or_installed_files(name):
    from nodes.comfy_services import SAMPLES, _bundled_checkpoints

    api, _ = load(name)
    named = _named_files(api)
    unknown = named - set(SAMPLES) - set(_bundled_checkpoints())
    if name in DEMO:
        assert unknown == set()  # out of the box: nothing for the user to copy
    else:
        assert unknown <= USER_FILES
        note = " ".join(n["widgets_values"][0] for n in load(name)[1]["nodes"] if n["type"] == "Note")
        for user_file in unknown:  # the note says where each of the user's files goes
            assert user_file.rstrip("/") in note and "ComfyUI/models/" in note


def run_overrides(name: str) -> dict:
    """What the tests change: fewer steps; for real-model workflows the tiny checkpoint in place
    of the user's model."""
    overrides = {"EMOSampler": {"steps": FEW_STEPS}, "EMOSampleToVideo": {"steps": FEW_STEPS}}
    if name not in DEMO:
        overrides["EMOModelLoader"] = {"ckpt_name": CHECKPOINT_NAME, "precision": "fp32"}
        overrides["EMOLoadReference"] = {"size": 64}
    return overrides


def load(name: str) -> tuple[dict, dict]:
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    return api, ui


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory):
    """ComfyUI's input folder as the pack leaves it on start: the sample media installed."""
    folder = tmp_path_factory.mktemp("comfy_input")
    services.install_samples(folder)
    return folder


@pytest.fixture(scope="module")
def classes(samples_dir):
    return {**NODE_CLASS_MAPPINGS, **make_core_nodes(samples_dir)}


@pytest.mark.parametrize("name", NAMES)
def test_ui_twin_describes_the_same_graph(name):
    api, ui = load(name)
    specs = make_workflows.node_specs()
    from_ui = make_workflows.ui_to_api(ui, specs)
    stripped = {node_id: {"class_type": n["class_type"], "inputs": n["inputs"]} for node_id, n in api.items()}
    assert from_ui == stripped
    assert ui["last_link_id"] == len(ui["links"]) and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    for link_id, source, slot, target, target_slot, link_type in ui["links"]:
        source_node = next(n for n in ui["nodes"] if n["id"] == source)
        target_node = next(n for n in ui["nodes"] if n["id"] == target)
        assert link_id in source_node["outputs"][slot]["links"]
        assert target_node["inputs"][target_slot]["link"] == link_id
        assert source_node["outputs"][slot]["type"] == link_type


def test_files_match_the_generator():
    assert make_workflows.write_all(check=True) == []


# Workflows whose loader reads another project's files run elsewhere on tiny files of that layout
# (EchoMimic's: tests/nodes/test_echomimic_nodes.py); the rest run here.
RUNNABLE = [name for name in NAMES
            if not {"EMOHalloLoader", "EMOEchoMimicLoader"} & {n["class_type"] for n in load(name)[0].values()}]


@pytest.mark.parametrize("name", RUNNABLE)
def test_workflow_runs_and_writes_a_video(name, classes, comfy_environment, samples_dir):
    from emo.audio import frame_count, load_audio

    api, ui = load(name)
    prompt = with_overrides(api, run_overrides(name))
    result = run(prompt, classes, workflow=ui)

    writer = next(i for i, n in prompt.items() if n["class_type"] in ("EMOVideoCombine", "EMOSampleToVideo"))
    path = Path(result.outputs[writer][0])
    assert path.is_file() and path.is_relative_to(comfy_environment / "output")
    assert path.name.endswith("_00001_" + path.suffix)
    info = probe_video(path)
    audio_name = next(n["inputs"]["audio"] for n in prompt.values() if n["class_type"] == "LoadAudio")
    waveform, rate = load_audio(samples_dir / audio_name)
    expected = frame_count(waveform.shape[-1], rate, 25.0)
    encoder = next(i for i, n in prompt.items() if n["class_type"] == "EMOAudioEncode")
    assert info["frames"] == expected == result.ui[encoder]["emo_readout"][0]["frames"]
    assert info["fps"] == pytest.approx(25.0)
    assert info["audio_seconds"] == pytest.approx(waveform.shape[-1] / rate, abs=0.05)
    scale = 2 if name == "emo_upscale_chain" else 1
    size = 64  # the demo model's own size (widget 0) and the tiny checkpoint's
    assert (info["width"], info["height"]) == (size * scale, size * scale)
    assert json.loads(info["metadata"]["workflow"]) == ui
    assert result.ui[writer]["gifs"][0]["filename"] == path.name


def test_interruption_mid_sampling_leaves_no_output_file(classes, comfy_environment, monkeypatch):
    api, ui = load("emo_talking_portrait")
    prompt = with_overrides(api, run_overrides("emo_talking_portrait"))
    original = services.Progress.update_absolute

    def cancel_at_step_three(self, value, total=None, preview_image=None):
        original(self, value, total, preview_image)
        if value == 3 and self.total > 1:  # the sampler's bar (AudioEncode's has one unit)
            services.request_interrupt()

    monkeypatch.setattr(services.Progress, "update_absolute", cancel_at_step_three)
    with pytest.raises(services.Interrupted):
        run(prompt, classes, workflow=ui)
    output = comfy_environment / "output"
    assert not output.exists() or [p for p in output.rglob("*") if p.is_file()] == []


def test_validation_catches_drift(classes):
    api, _ = load("emo_talking_portrait")
    broken = with_overrides(api, {"EMOSampler": {"scheduler": "karras", "steps": -5},
                                  "EMOLoadReference": {"crop": "face"}})
    broken["9"]["inputs"]["sampler_name"] = "euler"  # an input the node does not have
    broken["11"]["inputs"]["images"] = ["7", 0]  # EMO_AUDIO into an IMAGE input
    del broken["7"]["inputs"]["fps"]
    problems = "\n".join(validate(broken, classes))
    assert "'karras' is not one of" in problems
    assert "steps=-5 is below the minimum 0" in problems
    assert "unknown input 'sampler_name'" in problems
    assert "input 'images' (IMAGE) linked to a EMO_AUDIO output" in problems
    assert "required input 'fps' missing" in problems
    with pytest.raises(WorkflowError, match="invalid workflow"):
        run(broken, classes)
