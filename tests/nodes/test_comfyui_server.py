"""The pack inside a real ComfyUI: start `python main.py --cpu` from COMFYUI_PATH with this
repository linked into a throw-away custom_nodes folder, post every shipped API workflow to
/prompt and check /history reports success and the video exists.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout whose requirements are installed in
the interpreter COMFYUI_PYTHON (default: this one). See README, "Testing in a real ComfyUI".
Everything ComfyUI writes goes to a temporary --base-directory; the tiny checkpoint is found
through --extra-model-paths-config, so that path of the loader is exercised too.
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
from tests.nodes.conftest import CHECKPOINT_NAME, VOICE_FRAMES
from tests.nodes.test_workflows import NAMES, load, tiny_overrides
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
def comfyui(tmp_path_factory, tiny_checkpoint, input_dir):
    comfy_root = Path(COMFYUI_PATH)
    if not (comfy_root / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} has no main.py; point it at a ComfyUI checkout")
    base = tmp_path_factory.mktemp("comfyui")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    shutil.copytree(input_dir, base / "input")
    models = tmp_path_factory.mktemp("extra_models")
    (models / "emo").mkdir()
    shutil.copy(tiny_checkpoint, models / "emo" / CHECKPOINT_NAME)
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
        assert info[class_id]["category"] == "EMO"
    # The checkpoint comes from the extra_model_paths.yaml folder; the demo model from the pack.
    assert info["EMOModelLoader"]["input"]["required"]["ckpt_name"][0] == sorted([CHECKPOINT_NAME] + _bundled_checkpoints())
    assert len(NODE_CLASS_MAPPINGS) == 9


def test_web_extension_and_templates_are_served(comfyui):
    url = comfyui["url"]
    extensions = _get(f"{url}/extensions")
    assert f"/extensions/{PACK_DIR_NAME}/emo.js" in extensions
    assert b"registerExtension" in _get(f"{url}/extensions/{PACK_DIR_NAME}/emo.js")
    templates = _get(f"{url}/workflow_templates")
    assert sorted(templates[PACK_DIR_NAME]) == NAMES  # workflows/api/ is one level down: not listed


@pytest.mark.parametrize("name", NAMES)
def test_workflow_succeeds_in_comfyui(comfyui, name):
    api, ui = load(name)
    prompt = with_overrides(api, {**tiny_overrides(), "LoadImage": {"image": "portrait.png"},
                                  "LoadAudio": {"audio": "voice.wav"}})
    combine_id = next(i for i, n in prompt.items() if n["class_type"] == "EMOVideoCombine")
    core_video = name == "emo_talking_portrait" and "SaveVideo" in _get(f"{comfyui['url']}/object_info/SaveVideo")
    if core_video:  # VideoCombine's VIDEO output into core SaveVideo
        prompt["90"] = {"class_type": "SaveVideo", "inputs": {"video": [combine_id, 1], "filename_prefix": "core/copy",
                                                             "format": "auto", "codec": "auto"}}
    queued = _post(f"{comfyui['url']}/prompt", {"prompt": prompt, "client_id": "emo-tests",
                                                "extra_data": {"extra_pnginfo": {"workflow": ui}}})
    assert not queued.get("node_errors"), queued
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        history = _get(f"{comfyui['url']}/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
            break
        assert time.monotonic() < deadline, f"{name} did not finish in {RUN_TIMEOUT} s"
        time.sleep(0.5)
    status = entry["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-4000:]
    (video,) = entry["outputs"][combine_id]["gifs"]
    path = comfyui["base"] / video["type"] / video["subfolder"] / video["filename"]
    info = probe_video(path)
    assert info["frames"] == VOICE_FRAMES and info["audio_seconds"] > 0
    assert json.loads(info["metadata"]["workflow"])["nodes"] == ui["nodes"]
    sampler_id = next(i for i, n in prompt.items() if n["class_type"] == "EMOSampler")
    cached = {n for kind, data in status["messages"] if kind == "execution_cached" for n in data["nodes"]}
    if sampler_id in cached:  # same inputs as an earlier workflow: ComfyUI reused its frames
        assert sampler_id not in entry["outputs"]
    else:
        assert entry["outputs"][sampler_id]["emo_readout"][0]["frames"] == VOICE_FRAMES
    if core_video:
        (saved,) = entry["outputs"]["90"]["images"]
        copy = probe_video(comfyui["base"] / "output" / saved["subfolder"] / saved["filename"])
        assert copy["frames"] == VOICE_FRAMES


def test_interrupt_mid_sampling_leaves_no_video(comfyui):
    """Cancel in ComfyUI (POST /interrupt) while EMOSampler runs: the run ends as interrupted
    (ComfyUI's own exception, raised through the services module) and VideoCombine writes nothing."""
    api, _ = load("emo_talking_portrait")
    prompt = with_overrides(api, {**tiny_overrides(), "EMOSampler": {"steps": 200, "seed": 12345},
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
