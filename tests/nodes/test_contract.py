"""The node contract ComfyUI relies on: INPUT_TYPES / RETURN_TYPES / FUNCTION / CATEGORY agree,
every widget default is inside its range, every input has a tooltip, every node a DESCRIPTION,
and the pack loads the way ComfyUI loads it (a package named after its folder)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from tests.helpers import REPO

# The stages of the design (LoadReference, AudioEncode, ...) by their display names: one family
# in the node library, each under a sub-category of EMO.
DISPLAY_NAMES = {"EMO Load Checkpoint", "EMO Build From SD1.5 Parts", "EMO Load Hallo", "EMO Load Reference",
                 "EMO Audio Encode", "EMO Face Region Mask", "EMO Speed Control", "EMO Sampler",
                 "EMO Video Combine"}
CATEGORIES = {"EMO/loaders", "EMO/conditioning", "EMO/sampling", "EMO/video"}
CUSTOM_TYPES = {"EMO_MODEL", "EMO_REFERENCE", "EMO_AUDIO", "EMO_SPEED"}
CORE_TYPES = {"IMAGE", "MASK", "AUDIO", "INT", "FLOAT", "STRING", "BOOLEAN", "VIDEO"}
NODES = sorted(NODE_CLASS_MAPPINGS.items())


def test_display_names_and_ids():
    assert DISPLAY_NAMES <= set(NODE_DISPLAY_NAME_MAPPINGS.values())
    assert all(name.startswith("EMO ") for name in NODE_DISPLAY_NAME_MAPPINGS.values())
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    assert all(class_id.startswith("EMO") for class_id in NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("class_id, cls", NODES, ids=[n for n, _ in NODES])
def test_node_declaration_is_coherent(class_id, cls):
    assert cls.CATEGORY in CATEGORIES
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION)), f"{class_id}.FUNCTION names no method"
    assert isinstance(cls.RETURN_TYPES, tuple)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    assert set(cls.RETURN_TYPES) <= CUSTOM_TYPES | CORE_TYPES

    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}
    signature_names = cls.__dict__[cls.FUNCTION].__code__.co_varnames
    for section in ("required", "optional"):
        for name, definition in types.get(section, {}).items():
            kind, options = definition[0], (definition[1] if len(definition) > 1 else {})
            assert options.get("tooltip"), f"{class_id}.{name} has no tooltip"
            assert name in signature_names, f"{class_id}.{cls.FUNCTION} does not take {name!r}"
            if isinstance(kind, list):
                # A model-file list (ComfyUI's `*_name` inputs) may be empty when no model is
                # installed; every other combo offers values.
                assert kind or name.endswith("_name"), f"{class_id}.{name} offers no choices"
                if "default" in options:
                    assert options["default"] in kind
            elif kind in ("INT", "FLOAT"):
                assert "default" in options, f"{class_id}.{name} has no default"
                assert options["min"] <= options["default"] <= options["max"], f"{class_id}.{name}"
                if kind == "INT":
                    assert all(isinstance(options[k], int) for k in ("default", "min", "max"))
            elif kind in ("STRING", "BOOLEAN"):
                assert "default" in options
            else:
                assert kind in CUSTOM_TYPES | CORE_TYPES, f"{class_id}.{name}: unexpected type {kind}"
    for name in types.get("hidden", {}):
        assert name in signature_names


def test_every_custom_type_is_produced_and_consumed():
    produced = {t for cls in NODE_CLASS_MAPPINGS.values() for t in cls.RETURN_TYPES}
    consumed = {d[0] for cls in NODE_CLASS_MAPPINGS.values()
                for section in ("required", "optional")
                for d in cls.INPUT_TYPES().get(section, {}).values() if isinstance(d[0], str)}
    assert CUSTOM_TYPES <= produced and CUSTOM_TYPES <= consumed


def test_only_video_combine_is_an_output_node():
    outputs = [n for n, cls in NODE_CLASS_MAPPINGS.items() if getattr(cls, "OUTPUT_NODE", False)]
    assert sorted(outputs) == ["EMOSampleToVideo", "EMOVideoCombine"]


def test_pack_loads_like_comfyui_loads_it_without_importing_comfyui(tmp_path):
    """ComfyUI imports custom_nodes/<folder>/__init__.py as a package named after the folder
    (here with a dash, as a git clone is named). Importing it must not import ComfyUI modules
    and must expose the V1 mappings and WEB_DIRECTORY, not a V3 entry point."""
    script = textwrap.dedent(f"""
        import importlib.util, json, os, sys
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != {str(REPO)!r}]
        spec = importlib.util.spec_from_file_location("ComfyUI-EMO", {str(REPO / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        module = importlib.util.module_from_spec(spec)
        sys.modules["ComfyUI-EMO"] = module
        spec.loader.exec_module(module)
        comfy = sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "folder_paths", "server",
                                                                   "comfy_api", "execution"))
        print(json.dumps({{"nodes": sorted(module.NODE_CLASS_MAPPINGS), "web": module.WEB_DIRECTORY,
                          "v3": hasattr(module, "comfy_entrypoint"), "comfy": comfy,
                          "nodes_module": "nodes" in sys.modules,
                          "top_level_emo": sorted(m for m in sys.modules if m.split(".")[0] in ("emo", "tests")),
                          "path_added": [p for p in sys.path if os.path.abspath(p or ".") == {str(REPO)!r}]}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["nodes"] == sorted(NODE_CLASS_MAPPINGS)
    assert info["web"] == "./web" and (REPO / "web" / "emo.js").is_file()
    assert info["v3"] is False
    assert info["comfy"] == []
    # The pack's nodes package lives under the pack's name; the top-level name "nodes" stays
    # free for ComfyUI's own nodes.py.
    assert info["nodes_module"] is False
    # Package-relative imports: the library is "ComfyUI-EMO.emo", the pack adds nothing to
    # sys.path, and its folders (emo, tests, ...) shadow no other pack's modules.
    assert info["top_level_emo"] == [] and info["path_added"] == []


def test_the_nodes_need_only_the_runtime_requirements():
    """requirements.txt lists what the nodes import; the command line's, training's and
    evaluation's packages (requirements-cli.txt) must not be needed to load and list them."""
    # tqdm and pyyaml come with transformers/diffusers anyway; the pack's own modules that the
    # nodes load must not import them (nor the others) directly.
    blocked = ["accelerate", "scipy", "librosa", "skimage"]
    script = textwrap.dedent(f"""
        import re, sys
        for name in {blocked!r}:
            sys.modules[name] = None  # importing it raises ImportError
        from scripts import pack_import
        pack_import.install()  # the pack as ComfyUI loads it
        import nodes
        for cls in nodes.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        own = [m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] in ("emo", "nodes", "comfyui_emo")
               and getattr(m, "__file__", None)]
        direct = [f for f in own if re.search(r"^\\s*(import|from) (tqdm|yaml)\\b", open(f).read(), re.M)]
        print("ok" if not direct else direct)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    listed = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
              for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert not listed & {"torch", "torchvision", "torchaudio", "tqdm", "accelerate", "pyyaml", "scipy"}
