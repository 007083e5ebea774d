"""Writes the shipped workflows: each graph once, as a UI-format file (workflows/NAME.json,
drag-and-drop, listed by ComfyUI as templates of this pack) and as its API-format twin
(workflows/api/NAME.json, for `POST /prompt`).

    python scripts/make_workflows.py          # rewrite all files
    python scripts/make_workflows.py --check  # exit 1 if a file differs from what it would write

Widget order comes from the nodes' INPUT_TYPES, so regenerating after a node gains an input keeps
the UI files loadable. `ui_to_api` turns a UI-format file back into API format; the tests use it
to check that both twins describe the same graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "workflows"  # what ComfyUI serves as this pack's templates: workflows only
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from scripts import pack_import  # noqa: E402  (the nodes import as ComfyUI imports them)

pack_import.install()

# What the demo workflows load: the pack's bundled demo model and the sample media the pack
# copies into ComfyUI's input folder on start (nodes.comfy_services.SAMPLES).
DEMO_CHECKPOINT = "emo-demo.safetensors"
DEMO_PORTRAIT = "emo_demo_portrait.png"
DEMO_MASK = "emo_demo_portrait_mask.png"
DEMO_VOICE = "emo_demo_voice.wav"
PHOTO = "emo_sample_photo.jpg"
SPEECH = "emo_sample_speech.wav"
# What the real-model workflows name: the files their Note tells the user to put in place.
USER_CHECKPOINT = "my-emo.safetensors"
HALLO_NET, HALLO_VAE, HALLO_WAV2VEC2 = "net.pth", "sd-vae-ft-mse/", "wav2vec2-base-960h/"
ECHOMIMIC_WEIGHTS = "pretrained_weights/"  # EchoMimic's folder, as models/echomimic/pretrained_weights/
# The Hallo workflow names the user's whole pretrained_models folder in models/hallo instead.
HALLO_DIR, FROM_HALLO_DIR = "pretrained_models", "(from hallo_dir)"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
PACK = "comfyui-emo"  # Comfy Registry id (pyproject.toml)
NOTE_POS = (40, 740)  # under LoadAudio, clear of nodes that grow with previews


# ---- node specs ------------------------------------------------------------------------------
@dataclass
class NodeSpec:
    """What a UI-format file needs to know about a node type."""

    inputs: list[tuple[str, str]]  # (name, type) of every input; type "COMBO" for lists
    outputs: list[tuple[str, str]]  # (name, type)
    # Values of the UI widgets in order; a name is an input, a tuple (None, default) is a
    # front-end-only widget (upload button, seed control) stored in widgets_values only.
    widgets: list[str | tuple[None, object]] = field(default_factory=list)
    source: str = "comfy-core"
    defaults: dict = field(default_factory=dict)  # widget defaults (kept in a linked widget's slot)


# The few core nodes the workflows use, as ComfyUI defines them.
CORE_NODES = {
    "LoadImage": NodeSpec(inputs=[("image", "COMBO")], outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")],
                          widgets=["image", (None, "image")]),
    "LoadAudio": NodeSpec(inputs=[("audio", "COMBO")], outputs=[("AUDIO", "AUDIO")],
                          widgets=["audio", (None, None), (None, None)]),
    "LoadImageMask": NodeSpec(inputs=[("image", "COMBO"), ("channel", "COMBO")], outputs=[("MASK", "MASK")],
                              widgets=["image", "channel", (None, "image")]),
    "ImageScaleBy": NodeSpec(inputs=[("image", "IMAGE"), ("upscale_method", "COMBO"), ("scale_by", "FLOAT")],
                             outputs=[("IMAGE", "IMAGE")], widgets=["upscale_method", "scale_by"]),
    "PreviewImage": NodeSpec(inputs=[("images", "IMAGE")], outputs=[], widgets=[]),
}
NOTE_TYPES = ("Note", "MarkdownNote")
CORE_DISPLAY_NAMES = {"LoadImage": "Load Image", "LoadAudio": "Load Audio", "ImageScaleBy": "Upscale Image By",
                      "PreviewImage": "Preview Image", "LoadImageMask": "Load Image (as Mask)"}


def pack_spec(node_class) -> NodeSpec:
    """NodeSpec of one of this pack's classes, from INPUT_TYPES/RETURN_TYPES."""
    types = node_class.INPUT_TYPES()
    inputs, widgets, defaults = [], [], {}
    for section in ("required", "optional"):
        for name, definition in types.get(section, {}).items():
            kind = definition[0]
            options = definition[1] if len(definition) > 1 else {}
            if "default" in options:
                defaults[name] = options["default"]
            if isinstance(kind, (list, tuple)):
                inputs.append((name, "COMBO"))
                widgets.append(name)
            elif kind in WIDGET_TYPES:
                inputs.append((name, kind))
                widgets.append(name)
                if kind == "INT" and options.get("control_after_generate"):
                    widgets.append((None, "fixed"))
            else:
                inputs.append((name, kind))
    names = getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES
    return NodeSpec(inputs=inputs, outputs=list(zip(names, node_class.RETURN_TYPES)), widgets=widgets, source=PACK,
                    defaults=defaults)


def node_specs() -> dict[str, NodeSpec]:
    from nodes import NODE_CLASS_MAPPINGS

    return {**CORE_NODES, **{name: pack_spec(cls) for name, cls in NODE_CLASS_MAPPINGS.items()}}


# ---- graphs -------------------------------------------------------------------------------------
@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    inputs: dict  # name -> literal, or (node id, output index) for a link
    size: tuple[int, int] = (315, 130)
    title: str | None = None


@dataclass
class Note:
    id: int
    pos: tuple[int, int]
    text: str
    size: tuple[int, int] = (315, 240)


@dataclass
class Graph:
    description: str
    nodes: list
    notes: list = field(default_factory=list)


def _graph(*, loader: Node, image: str, audio: str, crop: str, speed: float | None, keyframes: str = "",
           mask: str | None = None, steps: int = 0, cfg: float = -1.0, scheduler: str = "ddim", start: float = 0.0,
           duration: float = 0.0, prefix: str = "EMO/portrait", video_format: str = "video/h264-mp4", crf: int = 19,
           upscale: bool = False, stream: bool = False) -> list:
    """The graph every workflow shares: loader -> reference (+ face region) -> audio -> speed ->
    sampler -> (upscale) -> video. Widgets at 0 / -1 take the checkpoint's own settings. speed None:
    no Speed Control (models without speed layers)."""
    nodes = [
        loader,
        Node(2, "LoadImage", (40, 200), {"image": image}, (315, 314)),
        Node(3, "LoadAudio", (40, 560), {"audio": audio}, (315, 136)),
        Node(4, "EMOLoadReference", (400, 200), {"image": (2, 0), "size": 0, "crop": crop,
                                                  "face_padding": 0.6, "model": (1, 0)}, (315, 150)),
        Node(5, "EMOFaceRegionMask", (400, 400), {"image": (4, 1), "expand_ratio": 0.2, "reference": (4, 0),
                                                   **({"mask": (12, 0)} if mask else {})}, (315, 100)),
        Node(6, "PreviewImage", (400, 540), {"images": (4, 1)}, (315, 250), title="Prepared reference"),
        Node(7, "EMOAudioEncode", (400, 830), {"audio": (3, 0), "model": (1, 0), "fps": 0.0,
                                               "start_seconds": start, "duration_seconds": duration}, (315, 150)),
    ]
    if speed is not None:
        nodes.append(Node(8, "EMOSpeedControl", (760, 60), {"speed": speed, "keyframes": keyframes}, (315, 130)))
    if mask:
        nodes.append(Node(12, "LoadImageMask", (40, 1100), {"image": mask, "channel": "red"}, (315, 314),
                          title="Face region (white)"))
    sampling = {"model": (1, 0), "reference": (4, 0), "audio_features": (7, 0), "face_mask": (5, 0),
                **({"speed": (8, 0)} if speed is not None else {}), "seed": 42, "steps": steps, "cfg": cfg, "scheduler": scheduler,
                "frames_per_clip": 0, "motion_frames": -1}
    video = {"filename_prefix": prefix, "format": video_format, "crf": crf, "save_output": True}
    if stream:
        nodes.append(Node(9, "EMOSampleToVideo", (760, 240), {**sampling, **video, "preview_frames": 16,
                                                               "audio": (7, 2)}, (340, 620)))
        nodes.append(Node(10, "PreviewImage", (1140, 240), {"images": (9, 2)}, (315, 250), title="Preview frames"))
        return nodes
    nodes.append(Node(9, "EMOSampler", (760, 240), sampling, (315, 290)))
    frames = (9, 0)
    if upscale:
        nodes.append(Node(10, "ImageScaleBy", (1120, 240), {"image": (9, 0), "upscale_method": "lanczos",
                                                             "scale_by": 2.0}, (315, 82),
                          title="Upscale (swap in an upscale model)"))
        frames = (10, 0)
    nodes.append(Node(11, "EMOVideoCombine", (1120 + (360 if upscale else 0), 240), {
        "images": frames, "audio": (7, 2), "frame_rate": (9, 1), **video}, (340, 420)))
    return nodes


def _demo(**kwargs) -> list:
    """A graph on the bundled demo model and its sample talker (no download, no file to copy)."""
    loader = Node(1, "EMOModelLoader", (40, 60), {"ckpt_name": DEMO_CHECKPOINT, "precision": "auto"}, (315, 82))
    return _graph(loader=loader, image=DEMO_PORTRAIT, audio=DEMO_VOICE, mask=DEMO_MASK, crop="center", **kwargs)


DEMO_NOTE = ("It runs as it is on the bundled demo model (emo-demo.safetensors, 64 px, synthetic drawn faces "
             "only) with the sample talker the pack puts in ComfyUI's input folder. For your own photos load "
             "a real model (see the Hallo and EMO checkpoint workflows). Widgets at 0 or -1 (size, fps, steps, "
             "cfg, frames_per_clip, motion_frames) use the checkpoint's own settings.")

ECHOMIMIC_FILES = (
    "- denoising_unet.pth, motion_module.pth (V1)\n"
    "- denoising_unet_acc.pth, motion_module_acc.pth (acc)\n"
    "- reference_unet.pth, face_locator.pth\n"
    "- audio_processor/whisper_tiny.pt\n"
    "- sd-vae-ft-mse/ (the folder)\n"
    "- sd-image-variations-diffusers/unet/config.json (only the config is read)\n"
)


def _echomimic_graph(variant: str) -> Graph:
    """EchoMimic's released weights, V1 or acc, on the sample photo and speech."""
    acc = variant == "acc"
    loader = Node(1, "EMOEchoMimicLoader", (40, 60), {"folder_name": ECHOMIMIC_WEIGHTS, "variant": variant,
                                                      "precision": "auto"}, (315, 106))
    settings = ("6 steps at cfg 1.0 (about ten times faster than V1; guidance off)" if acc else
                "30 steps at cfg 2.5")
    other = "echomimic_talking_photo (V1)" if acc else "echomimic_acc_talking_photo (6 steps, cfg 1.0)"
    note = (f"EchoMimic {variant} (antgroup/echomimic, Apache-2.0) on a real photo\n\n"
            "Copy EchoMimic's pretrained_weights folder, unchanged, to "
            "ComfyUI/models/echomimic/pretrained_weights/ so that it holds:\n" + ECHOMIMIC_FILES +
            "e.g. ComfyUI/models/echomimic/pretrained_weights/audio_processor/whisper_tiny.pt; then refresh the "
            f"page. Only the {'acc' if acc else 'V1'} files and the shared ones are needed here. EchoMimic runs at "
            f"512 px, 24 fps, {settings}: the whole video is denoised at once in 12-frame windows overlapping "
            "by 3 (frames_per_clip / motion_frames), so its latents stay in memory while the frames stream out. "
            f"It has no head-speed control. See also {other}. The sample photo and speech come with the pack; use "
            "your own frontal portrait and voice.")
    return Graph(
        f"EchoMimic {variant}'s released weights on a real photo and real speech (needs EchoMimic's "
        "pretrained_weights folder; see the note).",
        _graph(loader=loader, image=PHOTO, audio=SPEECH, crop="face", speed=None,
               prefix=f"EMO/echomimic{'_acc' if acc else ''}"),
        [Note(20, NOTE_POS, note, (360, 520))],
    )


WORKFLOWS = {
    "emo_talking_portrait": Graph(
        "A talking portrait: one image + a voice track -> an mp4 with sound (runs on the bundled demo model).",
        _demo(speed=0.5, prefix="EMO/talking"),
        [Note(20, NOTE_POS, "Talking portrait\n\n" + DEMO_NOTE + "\n\nSpeed 0.5 suits speech. The demo "
                            "portrait's face region comes from its mask file (Load Image (as Mask)); real photos "
                            "need none: the face is found in the full-resolution photo.", (315, 330))],
    ),
    "emo_singing_portrait": Graph(
        "A singing portrait: livelier head motion (speed 1.2) for a song (runs on the bundled demo model).",
        _demo(speed=1.2, prefix="EMO/singing"),
        [Note(20, NOTE_POS, "Singing portrait\n\nSpeed Control 1.2: singing moves the head more than "
                            "speech (the paper uses 1.0-1.3). For a song with a calm verse and a lively "
                            "chorus, write keyframes instead, e.g.\n0: 0.6\n12: 1.2\n\n" + DEMO_NOTE,
              (315, 330))],
    ),
    "emo_long_audio": Graph(
        "Long audio: EMO Sample To Video streams every clip into the file, so memory does not grow with "
        "the length (runs on the bundled demo model).",
        _demo(speed=0.5, keyframes="0: 0.4\n30: 0.8\n60: 0.5", prefix="EMO/long", stream=True),
        [Note(20, NOTE_POS, "Long audio\n\nEMO generates clips one after another, each continuing from the "
                            "last frames of the one before, so any length works; time grows linearly.\n\n"
                            "EMO Sample To Video writes each clip into the video as soon as it is made: memory "
                            "stays that of one clip however long the audio (EMO Sampler keeps every frame in "
                            "RAM: 4.7 GB per minute at 512 px). It outputs a few frames as a preview.\n\n"
                            + DEMO_NOTE, (315, 400))],
    ),
    "emo_upscale_chain": Graph(
        "EMO frames through an upscaler into Video Combine (webm), as IMAGE like any other frames "
        "(runs on the bundled demo model).",
        _demo(speed=0.5, prefix="EMO/upscaled", video_format="video/webm", crf=32, upscale=True),
        [Note(20, NOTE_POS, "Chaining\n\nEMO Sampler outputs plain IMAGE frames: put upscalers, face "
                            "restorers or frame interpolators between it and Video Combine.\n\nFor a "
                            "model upscaler replace 'Upscale' with UpscaleModelLoader + "
                            "ImageUpscaleWithModel. After a 2x frame interpolator, double "
                            "Video Combine's frame_rate (disconnect the fps link and type 50).\n\n" + DEMO_NOTE,
              (315, 360))],
    ),
    "hallo_talking_photo": Graph(
        "Hallo's released weights on a real photo and real speech (needs Hallo's files; see the note).",
        _graph(loader=Node(1, "EMOHalloLoader", (40, 60), {"net_name": FROM_HALLO_DIR, "vae_name": FROM_HALLO_DIR,
                                                            "wav2vec2_name": FROM_HALLO_DIR, "precision": "auto",
                                                            "hallo_dir": HALLO_DIR, "identity": "on"},
                           (315, 178)),
               image=PHOTO, audio=SPEECH, crop="face", speed=0.5, prefix="EMO/hallo"),
        [Note(20, NOTE_POS, "Hallo (fudan-generative-vision/hallo, MIT) on a real photo\n\nCopy Hallo's whole "
                            "pretrained_models download, unchanged, into ComfyUI/models/hallo/ (so that "
                            "ComfyUI/models/hallo/pretrained_models/hallo/net.pth exists), refresh the page and pick "
                            "it in hallo_dir. It holds hallo/net.pth, sd-vae-ft-mse/, wav2vec/wav2vec2-base-960h/, "
                            "stable-diffusion-v1-5/unet/config.json, face_analysis/models/ (insightface antelopev2: "
                            "Hallo's identity and face/lip masks) and audio_separator/Kim_Vocal_2.onnx (for songs: "
                            "EMO Separate Vocals before EMO Audio Encode). identity off runs without the face "
                            "embedding. The sample photo and speech come with the pack; use your own frontal "
                            "portrait and voice. Hallo runs at 512 px, 16-frame clips, 40 steps, cfg 3.5 (its "
                            "checkpoint's settings, taken when the widgets are 0 / -1).", (315, 400))],
    ),
    "echomimic_talking_photo": _echomimic_graph("V1"),
    "echomimic_acc_talking_photo": _echomimic_graph("acc"),
    "emo_checkpoint_photo": Graph(
        "An EMO checkpoint you trained or converted (models/emo) on a real photo and real speech.",
        _graph(loader=Node(1, "EMOModelLoader", (40, 60), {"ckpt_name": USER_CHECKPOINT, "precision": "auto"},
                           (315, 82)),
               image=PHOTO, audio=SPEECH, crop="face", speed=0.5, prefix="EMO/checkpoint"),
        [Note(20, NOTE_POS, "Your EMO checkpoint on a real photo\n\nPut the checkpoint (one .safetensors "
                            "written by `emo train`, `emo convert` or `emo assemble`) in ComfyUI/models/emo/ "
                            "(or an 'emo:' folder of extra_model_paths.yaml), refresh the page and pick it in "
                            "EMO Load Checkpoint (the workflow names my-emo.safetensors). Its own settings "
                            "(size, fps, clip length, steps, cfg) apply while the widgets are 0 / -1. The sample "
                            "photo and speech come with the pack; use your own.", (315, 330))],
    ),
}


# ---- emitters -------------------------------------------------------------------------------------
def to_api(graph: Graph, specs: dict[str, NodeSpec]) -> dict:
    prompt = {}
    for node in graph.nodes:
        spec = specs[node.type]
        inputs = {}
        for name, _ in spec.inputs:
            if name in node.inputs:
                value = node.inputs[name]
                inputs[name] = [str(value[0]), value[1]] if isinstance(value, tuple) else value
            elif name in spec.widgets and name in spec.defaults:
                inputs[name] = spec.defaults[name]  # the front end sends every widget's value
        unknown = set(node.inputs) - {name for name, _ in spec.inputs}
        if unknown:
            raise ValueError(f"{node.type} #{node.id}: unknown inputs {sorted(unknown)}")
        prompt[str(node.id)] = {"class_type": node.type, "inputs": inputs,
                                "_meta": {"title": node.title or _display_name(node.type)}}
    return prompt


def _display_name(node_type: str) -> str:
    from nodes import NODE_DISPLAY_NAME_MAPPINGS

    return NODE_DISPLAY_NAME_MAPPINGS.get(node_type) or CORE_DISPLAY_NAMES.get(node_type, node_type)


def to_ui(graph: Graph, specs: dict[str, NodeSpec]) -> dict:
    ui_nodes, links = [], []
    by_id = {node.id: node for node in graph.nodes}
    # Inputs shown as sockets: every non-widget input, plus widget inputs that are linked.
    sockets = {}
    for node in graph.nodes:
        spec = specs[node.type]
        widget_names = {w for w in spec.widgets if isinstance(w, str)}
        sockets[node.id] = [(name, kind) for name, kind in spec.inputs
                            if name not in widget_names or isinstance(node.inputs.get(name), tuple)]
    outputs_links: dict[tuple[int, int], list[int]] = {}
    input_links: dict[tuple[int, str], int] = {}
    for node in graph.nodes:
        for slot, (name, kind) in enumerate(sockets[node.id]):
            value = node.inputs.get(name)
            if isinstance(value, tuple):
                source_id, source_slot = value
                link_type = specs[by_id[source_id].type].outputs[source_slot][1]
                link_id = len(links) + 1
                links.append([link_id, source_id, source_slot, node.id, slot, link_type])
                outputs_links.setdefault((source_id, source_slot), []).append(link_id)
                input_links[(node.id, name)] = link_id
    order = {node.id: i for i, node in enumerate(graph.nodes)}
    for node in graph.nodes:
        spec = specs[node.type]
        widgets = {w for w in spec.widgets if isinstance(w, str)}
        inputs = []
        for name, kind in sockets[node.id]:
            entry = {"name": name, "type": kind, "link": input_links.get((node.id, name))}
            if name in widgets:
                entry["widget"] = {"name": name}
            inputs.append(entry)
        outputs = [{"name": name, "type": kind, "links": outputs_links.get((node.id, i), []), "slot_index": i}
                   for i, (name, kind) in enumerate(spec.outputs)]
        values = []
        for widget in spec.widgets:
            if isinstance(widget, tuple):
                values.append(widget[1])
            else:
                value = node.inputs.get(widget, spec.defaults.get(widget))  # unset: the default
                values.append(spec.defaults.get(widget) if isinstance(value, tuple) else value)
        ui_node = {
            "id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
            "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"cnr_id": spec.source, "Node name for S&R": node.type},
            "widgets_values": values,
        }
        if node.title:
            ui_node["title"] = node.title
        ui_nodes.append(ui_node)
    for i, note in enumerate(graph.notes):
        ui_nodes.append({"id": note.id, "type": "Note", "pos": list(note.pos), "size": list(note.size),
                         "flags": {}, "order": len(graph.nodes) + i, "mode": 0, "inputs": [], "outputs": [],
                         "properties": {}, "widgets_values": [note.text], "color": "#432", "bgcolor": "#653"})
    return {
        "last_node_id": max(n["id"] for n in ui_nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [80, 30]}, "emo_description": graph.description},
        "version": 0.4,
    }


def ui_to_api(workflow: dict, specs: dict[str, NodeSpec]) -> dict:
    """A UI-format workflow -> API format (inputs from widgets_values and links; notes dropped).

    Raises ValueError when a node type is unknown or its widget values do not fit its widgets.
    """
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        if node.get("mode", 0) != 0:
            continue  # muted/bypassed nodes are not sent
        spec = specs.get(node["type"])
        if spec is None:
            raise ValueError(f"node #{node['id']}: unknown type {node['type']!r}")
        values = node.get("widgets_values", [])
        if len(values) != len(spec.widgets):
            raise ValueError(f"{node['type']} #{node['id']}: {len(values)} widget values for widgets "
                             f"{spec.widgets}")
        inputs = {}
        for widget, value in zip(spec.widgets, values):
            if isinstance(widget, str):
                inputs[widget] = value
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, source, slot, target, _, _ = links[socket["link"]]
                if target != node["id"]:
                    raise ValueError(f"link {socket['link']} does not end at node #{node['id']}")
                inputs[socket["name"]] = [str(source), slot]
        ordered = {name: inputs[name] for name, _ in spec.inputs if name in inputs}
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": ordered}
    return prompt


def write_all(check: bool = False) -> list[Path]:
    specs = node_specs()
    differing = []
    (ROOT / "api").mkdir(exist_ok=True)
    for name, graph in WORKFLOWS.items():
        for path, data in ((ROOT / f"{name}.json", to_ui(graph, specs)),
                           (ROOT / "api" / f"{name}.json", to_api(graph, specs))):
            text = json.dumps(data, indent=2) + "\n"
            if not path.is_file() or path.read_text() != text:
                differing.append(path)
                if not check:
                    path.write_text(text)
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args()
    differing = write_all(check=args.check)
    for path in differing:
        print(("differs: " if args.check else "wrote: ") + str(path.relative_to(ROOT.parent)))
    return 1 if args.check and differing else 0


if __name__ == "__main__":
    sys.exit(main())
