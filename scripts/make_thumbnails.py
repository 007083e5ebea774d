"""Writes workflows/NAME.jpg, the thumbnail ComfyUI's Templates browser shows for each shipped
workflow, from a real run of it.

    python scripts/make_thumbnails.py            # every workflow
    python scripts/make_thumbnails.py NAME ...   # only these (e.g. after adding a workflow)

The demo workflows run as shipped (the bundled demo model on the sample talker, through the node
classes) and the thumbnail is a 2x2 grid of four evenly spaced frames of the video they write.
The real-model workflows need the user's weights, so their thumbnail is the reference their
Load Reference node prepares from the sample photo, captioned with what to install.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from scripts import pack_import  # noqa: E402  (the nodes import as ComfyUI imports them)

pack_import.install()

from PIL import Image, ImageDraw  # noqa: E402

SIDE = 384  # pixels of the square thumbnail


def _grid(frames) -> Image.Image:
    from emo.image import to_pil

    half = SIDE // 2
    canvas = Image.new("RGB", (SIDE, SIDE))
    for i, frame in enumerate(frames[:4]):
        tile = to_pil(frame).resize((half, half), Image.Resampling.LANCZOS)
        canvas.paste(tile, ((i % 2) * half, (i // 2) * half))
    return canvas


def _captioned(image: Image.Image, caption: str) -> Image.Image:
    image = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, SIDE - 28, SIDE, SIDE), fill=(20, 20, 20))
    draw.text((8, SIDE - 22), caption, fill=(240, 200, 90))
    return image


def demo_thumbnail(name: str, api: dict, ui: dict, classes: dict, output: Path) -> Image.Image:
    from emo.video import read_video_frames
    from nodes import comfy_services as services
    from tests.nodes.workflow_runner import run

    services.set_output_directories(output / "output", output / "temp")
    result = run(api, classes, workflow=ui)
    writer = next(i for i, n in api.items() if n["class_type"] in ("EMOVideoCombine", "EMOSampleToVideo"))
    frames = read_video_frames(result.outputs[writer][0])
    picks = [round(i * (frames.shape[0] - 1) / 3) for i in range(4)]
    return _grid(frames[picks])


def photo_thumbnail(api: dict, samples: Path) -> Image.Image:
    from emo.image import load_image, to_pil
    from nodes.reference import load_reference

    image_name = next(n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage")
    loader = next(n for n in api.values() if n["class_type"].endswith("Loader"))
    reference, _ = load_reference(load_image(samples / image_name)[None], 512, "face")
    needs = {"EMOHalloLoader": "Hallo's weights", "EMOEchoMimicLoader": "EchoMimic's weights"}.get(
        loader["class_type"], "your EMO checkpoint")
    return _captioned(to_pil(reference.image), f"real photo - needs {needs} (see the note)")


def main(argv: list[str] | None = None) -> int:
    import torch

    from nodes import NODE_CLASS_MAPPINGS
    from nodes import comfy_services as services
    from scripts import make_workflows
    from tests.nodes.core_nodes import make_core_nodes

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        samples = scratch / "input"
        services.install_samples(samples)
        classes = {**NODE_CLASS_MAPPINGS, **make_core_nodes(samples)}
        names = list(sys.argv[1:] if argv is None else argv) or list(make_workflows.WORKFLOWS)
        unknown = sorted(set(names) - set(make_workflows.WORKFLOWS))
        if unknown:
            raise SystemExit(f"unknown workflows {unknown}; known: {', '.join(make_workflows.WORKFLOWS)}")
        for name in names:
            api = json.loads((make_workflows.ROOT / "api" / f"{name}.json").read_text())
            ui = json.loads((make_workflows.ROOT / f"{name}.json").read_text())
            if api["1"]["inputs"].get("ckpt_name") == make_workflows.DEMO_CHECKPOINT:
                image = demo_thumbnail(name, api, ui, classes, scratch / name)
            else:
                image = photo_thumbnail(api, samples)
            path = make_workflows.ROOT / f"{name}.jpg"
            image.save(path, quality=85, optimize=True)
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
