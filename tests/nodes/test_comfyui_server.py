"""The pack inside a real ComfyUI: start `python main.py --cpu` from COMFYUI_PATH with this
repository linked into a throw-away custom_nodes folder and an EMPTY input folder, post every
shipped API workflow to /prompt and check /history reports success and the video exists.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout whose requirements are installed in
the interpreter COMFYUI_PYTHON (default: this one). See README, "In ComfyUI".
Everything ComfyUI writes goes to a temporary --base-directory. The demo workflows run as
shipped (the pack fills the input folder with its samples on start; only the step count is
lowered); the real-model workflows run with the tiny checkpoint under the name their note asks
for, found through --extra-model-paths-config.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from emo.video import probe_video
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from nodes.comfy_services import _bundled_checkpoints
from tests.helpers import REPO
from nodes.comfy_services import SAMPLES
from scripts import make_workflows
from tests.nodes.conftest import CHECKPOINT_NAME
from tests.nodes.test_workflows import NAMES, RUNNABLE, load, run_overrides
from tests.nodes.workflow_runner import with_overrides

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(
    not COMFYUI_PATH,
    reason="COMFYUI_PATH is not set: point it at a ComfyUI checkout (requirements installed; "
           "COMFYUI_PYTHON names its interpreter if not this one) to run the pack in a real ComfyUI",
)
PACK_DIR_NAME = "ComfyUI-EMO"
START_TIMEOUT = 240  # seconds; a cold start imports torch, the front end and every core node
RUN_TIMEOUT = 300  # seconds per workflow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body


def _post(url: str, data: dict):
    request = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"POST {url} -> {error.code}: {error.read().decode()[:2000]}") from None


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory, tiny_checkpoint):
    comfy_root = Path(COMFYUI_PATH)
    if not (comfy_root / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} has no main.py; point it at a ComfyUI checkout")
    base = tmp_path_factory.mktemp("comfyui")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    (base / "input").mkdir()  # empty: the pack must bring what its workflows load
    models = tmp_path_factory.mktemp("extra_models")
    (models / "emo").mkdir()
    for name in (CHECKPOINT_NAME, make_workflows.USER_CHECKPOINT):
        shutil.copy(tiny_checkpoint, models / "emo" / name)
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"emo_tests:\n    base_path: {models}\n    emo: emo\n")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "comfyui.log"
    command = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(port), "--disable-auto-launch", "--base-directory", str(base),
               "--extra-model-paths-config", str(extra)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=comfy_root, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                _get(f"{url}/object_info/EMOSampler")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not serve within {START_TIMEOUT} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
        yield {"url": url, "base": base, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_pack_imports_and_registers_its_nodes(comfyui):
    log = comfyui["log"].read_text()
    assert "IMPORT FAILED" not in log and "Cannot import" not in log, log[-4000:]
    info = _get(f"{comfyui['url']}/object_info")
    for class_id, display_name in NODE_DISPLAY_NAME_MAPPINGS.items():
        assert info[class_id]["display_name"] == display_name
        assert info[class_id]["category"].startswith("EMO/")
    # Checkpoints from the extra_model_paths.yaml folder; the demo model from the pack.
    assert info["EMOModelLoader"]["input"]["required"]["ckpt_name"][0] == sorted(
        [CHECKPOINT_NAME, make_workflows.USER_CHECKPOINT] + _bundled_checkpoints())
    assert set(NODE_CLASS_MAPPINGS) <= set(info)
    # The empty input folder now holds the samples the workflows load, and LoadImage lists them.
    assert sorted(p.name for p in (comfyui["base"] / "input").iterdir() if p.is_file()) == sorted(SAMPLES)
    assert "emo_demo_portrait.png" in info["LoadImage"]["input"]["required"]["image"][0]


def test_web_extension_and_templates_are_served(comfyui):
    url = comfyui["url"]
    extensions = _get(f"{url}/extensions")
    assert f"/extensions/{PACK_DIR_NAME}/emo.js" in extensions
    assert b"registerExtension" in _get(f"{url}/extensions/{PACK_DIR_NAME}/emo.js")
    templates = _get(f"{url}/workflow_templates")
    assert sorted(templates[PACK_DIR_NAME]) == NAMES  # workflows/api/ is one level down: not listed
    for name in NAMES:  # what the Templates browser fetches when a template is clicked
        assert _get(f"{url}/api/workflow_templates/{PACK_DIR_NAME}/{name}.json")["nodes"] == load(name)[1]["nodes"]
        with urllib.request.urlopen(f"{url}/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
    with pytest.raises(urllib.error.HTTPError):  # only workflows are served, not the pack's scripts
        _get(f"{url}/api/workflow_templates/{PACK_DIR_NAME}/../scripts/make_workflows.py")


def _run(comfyui, prompt: dict, ui: dict | None = None) -> dict:
    queued = _post(f"{comfyui['url']}/prompt", {"prompt": prompt, "client_id": "emo-tests",
                                                "extra_data": {"extra_pnginfo": {"workflow": ui or {}}}})
    assert not queued.get("node_errors"), queued
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        entry = _get(f"{comfyui['url']}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
            return entry
        assert time.monotonic() < deadline, f"the prompt did not finish in {RUN_TIMEOUT} s"
        time.sleep(0.5)


def _prompt(name: str) -> tuple[dict, dict]:
    api, ui = load(name)
    overrides = run_overrides(name)
    overrides.pop("EMOModelLoader", None)  # the tiny checkpoint sits under the name a real-model workflow uses
    return with_overrides(api, overrides), ui


@pytest.mark.parametrize("name", RUNNABLE)
def test_workflow_succeeds_in_comfyui(comfyui, name):
    from emo.audio import frame_count, load_audio

    prompt, ui = _prompt(name)
    writer = next(i for i, n in prompt.items() if n["class_type"] in ("EMOVideoCombine", "EMOSampleToVideo"))
    core_video = name == "emo_talking_portrait" and "SaveVideo" in _get(f"{comfyui['url']}/object_info/SaveVideo")
    if core_video:  # the VIDEO output into core SaveVideo
        prompt["90"] = {"class_type": "SaveVideo", "inputs": {"video": [writer, 1], "filename_prefix": "core/copy",
                                                             "format": "auto", "codec": "auto"}}
    entry = _run(comfyui, prompt, ui)
    status = entry["status"]
    errors = [f"{d.get('node_type')}: {d.get('exception_type')}: {d.get('exception_message')}"
              for kind, d in status["messages"] if kind == "execution_error"]
    assert status["status_str"] == "success", errors or json.dumps(status["messages"])[-4000:]
    (video,) = entry["outputs"][writer]["gifs"]
    path = comfyui["base"] / video["type"] / video["subfolder"] / video["filename"]
    info = probe_video(path)
    audio = next(n["inputs"]["audio"] for n in prompt.values() if n["class_type"] == "LoadAudio")
    waveform, rate = load_audio(comfyui["base"] / "input" / audio)
    assert info["frames"] == frame_count(waveform.shape[-1], rate, 25.0) and info["audio_seconds"] > 0
    assert json.loads(info["metadata"]["workflow"])["nodes"] == ui["nodes"]
    if core_video:
        (saved,) = entry["outputs"]["90"]["images"]
        copy = probe_video(comfyui["base"] / "output" / saved["subfolder"] / saved["filename"])
        assert copy["frames"] == info["frames"]


def test_runs_never_overwrite_and_unload_models_frees_the_model(comfyui):
    """Two runs with different seeds write two numbered files (ComfyUI's own counter form,
    normal permissions); after "Unload Models" (POST /free) the next run loads the model again
    through ComfyUI's model management."""
    log = comfyui["log"]
    paths = []
    for seed in (1, 2):
        prompt, ui = _prompt("emo_talking_portrait")
        prompt = with_overrides(prompt, {"EMOSampler": {"seed": seed}, "EMOVideoCombine": {"filename_prefix": "EMO/twice"}})
        entry = _run(comfyui, prompt, ui)
        assert entry["status"]["status_str"] == "success"
        (video,) = entry["outputs"]["11"]["gifs"]
        paths.append(comfyui["base"] / video["type"] / video["subfolder"] / video["filename"])
    assert [p.name for p in paths] == ["twice_00001_.mp4", "twice_00002_.mp4"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths)  # readable by group and others
    loads_before = log.read_text().count("Requested to load EMOModel")
    assert loads_before >= 1
    request = urllib.request.Request(f"{comfyui['url']}/free", json.dumps({"unload_models": True}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    time.sleep(2)  # the queue worker frees the models between prompts
    prompt, ui = _prompt("emo_talking_portrait")
    prompt = with_overrides(prompt, {"EMOSampler": {"seed": 3}})
    assert _run(comfyui, prompt, ui)["status"]["status_str"] == "success"
    assert log.read_text().count("Requested to load EMOModel") == loads_before + 1


def test_interrupt_mid_sampling_leaves_no_video(comfyui):
    """Cancel in ComfyUI (POST /interrupt) while EMOSampler runs: the run ends as interrupted
    (ComfyUI's own exception, raised through the services module) and VideoCombine writes nothing."""
    prompt, _ = _prompt("emo_talking_portrait")
    prompt = with_overrides(prompt, {"EMOSampler": {"steps": 200, "seed": 12345},
                                     "EMOVideoCombine": {"filename_prefix": "EMO/interrupted"}})
    prompt_id = _post(f"{comfyui['url']}/prompt", {"prompt": prompt, "client_id": "emo-tests"})["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not _get(f"{comfyui['url']}/queue")["queue_running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(3)  # past model loading and audio encoding, into the 600 sampling steps
    request = urllib.request.Request(f"{comfyui['url']}/interrupt", b"{}", {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
    while True:
        entry = _get(f"{comfyui['url']}/history/{prompt_id}").get(prompt_id)
        if entry is not None:
            break
        assert time.monotonic() < deadline, "the interrupted prompt never reached /history"
        time.sleep(0.5)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    interrupted = next(data for kind, data in entry["status"]["messages"] if kind == "execution_interrupted")
    assert interrupted["node_type"] == "EMOSampler"
    assert not list((comfyui["base"] / "output").rglob("interrupted_*"))
