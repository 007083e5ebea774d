"""The shipped workflows: each API-format file is validated against the nodes and executed through
the node classes (tiny checkpoint, small sizes), its UI-format twin describes the same graph,
and the files are what workflows/make_workflows.py writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emo.video import probe_video
from nodes import NODE_CLASS_MAPPINGS
from nodes import comfy_services as services
from tests.helpers import REPO
from tests.nodes.conftest import CHECKPOINT_NAME, VOICE_FRAMES, VOICE_SECONDS
from tests.nodes.core_nodes import make_core_nodes
from tests.nodes.workflow_runner import WorkflowError, run, validate, with_overrides
from workflows import make_workflows

WORKFLOWS = REPO / "workflows"
NAMES = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))


def test_the_four_workflows_are_shipped_in_both_formats():
    assert NAMES == ["emo_long_audio", "emo_singing_portrait", "emo_talking_portrait", "emo_upscale_chain"]
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == NAMES


def tiny_overrides() -> dict:
    """What the tests change: the tiny checkpoint, the test inputs, a small size, few steps."""
    return {
        "EMOModelLoader": {"ckpt_name": CHECKPOINT_NAME, "precision": "fp32"},
        "LoadImage": {"image": "portrait.png"},
        "LoadAudio": {"audio": "voice.wav"},
        "EMOLoadReference": {"size": 64},
        "EMOSampler": {"steps": 2},
    }


def load(name: str) -> tuple[dict, dict]:
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    return api, ui


@pytest.fixture(scope="module")
def classes(input_dir):
    return {**NODE_CLASS_MAPPINGS, **make_core_nodes(input_dir)}


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


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_and_writes_a_video(name, classes, comfy_environment):
    api, ui = load(name)
    prompt = with_overrides(api, tiny_overrides())
    result = run(prompt, classes, workflow=ui)

    combine_id = next(i for i, n in prompt.items() if n["class_type"] == "EMOVideoCombine")
    path = Path(result.outputs[combine_id][0])
    assert path.is_file() and path.is_relative_to(comfy_environment / "output")
    info = probe_video(path)
    sampler = prompt[next(i for i, n in prompt.items() if n["class_type"] == "EMOSampler")]
    encoder_readout = result.ui[sampler["inputs"]["audio_features"][0]]["emo_readout"][0]
    assert info["frames"] == VOICE_FRAMES == encoder_readout["frames"]
    assert info["fps"] == pytest.approx(25.0)
    assert info["audio_seconds"] == pytest.approx(VOICE_SECONDS, abs=0.05)
    scale = 2 if name == "emo_upscale_chain" else 1
    assert (info["width"], info["height"]) == (64 * scale, 64 * scale)
    assert json.loads(info["metadata"]["workflow"]) == ui
    assert result.ui[combine_id]["gifs"][0]["filename"] == path.name


def test_interruption_mid_sampling_leaves_no_output_file(classes, comfy_environment, monkeypatch):
    api, ui = load("emo_talking_portrait")
    prompt = with_overrides(api, tiny_overrides())
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
