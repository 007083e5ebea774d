"""Paste-back seams: how visible is the animated square once it is back in the photo?

    python bench/paste_back.py [--frames 4] [--demo] [--json outputs/paste_back.json]

Photos: scikit-image's astronaut (twice its size, 1024 px) on scikit-image's coffee photo
stretched to a 1920x1080 canvas and to a 1080x1920 one. The face is detected and cropped as
`emo generate` does (`prepare_portrait`, face crop) at S = 512 and 64 px. Stand-ins for a
model's frames: that reference square, 0.08 brighter, with fresh Gaussian noise (sd 0.02) per
frame. With --demo, also the bundled demo model's own frames of its whole sample portrait (a
drawn face; the portrait 4x on the coffee canvas is the crop), whose colours drift (measured:
green +0.04 on average over the background, -0.035 .. +0.07 from frame to frame).

Per case and paste mode (hard edge, feathered, feathered + colour match, face region), from
`emo.paste_back.seam_report` on every frame (means):
- outside: mean |composite - photo| in the 3 px just outside the blend mask (0 = untouched);
- seam step: the largest pixel-to-pixel step of (composite - photo) averaged along the mask's
  sides, over the ramp and 3 px either side (what a straight seam shows);
- photo grad: the photo's mean neighbour difference; ratio = seam step / photo grad;
- ramp offset: the largest per-channel median of (generated - photo) over the ramp: the colour
  jump the feather hides (colour matching removes it);
- ms/frame: compositing time per 1920x1080 frame on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo.image import resize  # noqa: E402
from emo.paste_back import PasteBack, seam_report  # noqa: E402
from emo.runtime.reference import prepare_portrait  # noqa: E402

MODES = {
    "hard edge": dict(feather=0.0, colour_match=False),
    "feathered": dict(colour_match=False),
    "feathered + colour": dict(),
    "face region + colour": dict(region="face"),
}


def canvas(height: int, width: int, top: int, left: int) -> torch.Tensor:
    """The astronaut at 1024 px on the coffee photo stretched to width x height: (H, W, 3)."""
    from skimage import data

    background = resize(torch.from_numpy(data.coffee()).float() / 255, height, width)
    astronaut = resize(torch.from_numpy(data.astronaut()).float() / 255, 1024, 1024)
    background[top:top + 1024, left:left + 1024] = astronaut[:height - top, :width - left]
    return background


def stand_in_frames(reference: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = reference.shape[0]
    return (reference[None] + 0.08 + 0.02 * torch.randn(count, size, size, 3, generator=generator)).clamp(0, 1)


def demo_case(frames_wanted: int):
    """The demo model's frames of its whole sample portrait (as `make demo` animates it), the
    portrait placed 4x (1024 px) on the coffee canvas: the crop is the portrait's square."""
    from emo.audio import load_audio
    from emo.checkpoints import DEMO_CHECKPOINT
    from emo.image import load_image
    from emo.pipeline import EMOPipeline

    assets = DEMO_CHECKPOINT.parent
    portrait = load_image(assets / "sample_portrait.png")  # 256 px
    photo = canvas(1080, 1920, 28, 448)
    photo[28:1052, 448:1472] = resize(portrait, 1024, 1024)
    info = {"mode": "center", "box": (448, 28, 1472, 1052), "padded": False, "face_box": None,
            "source_height": 1080, "source_width": 1920}
    reference = resize(portrait, 64, 64)
    mask = (resize(load_image(assets / "sample_portrait_mask.png"), 64, 64).mean(-1) > 0.5).float()
    pipeline = EMOPipeline.from_checkpoint(DEMO_CHECKPOINT)
    waveform, rate = load_audio(assets / "sample_voice.wav")
    features = pipeline.encode_audio(waveform, rate, 25.0, duration_seconds=frames_wanted / 25.0 + 0.01)
    frames = torch.cat(list(pipeline.iter_clips(reference, features, face_mask=mask)))
    return photo, info, frames[:frames_wanted]


def measure(photo: torch.Tensor, info: dict, frames: torch.Tensor, options: dict) -> dict:
    paste = PasteBack(photo, info, **options)
    start = time.perf_counter()
    composited = paste.paste(frames)
    elapsed = (time.perf_counter() - start) / len(frames)
    mask = paste.full_mask()
    reports = [seam_report(frame, paste.source, mask) for frame in composited]
    summary = {key: sum(r[key] for r in reports) / len(reports) for key in reports[0]}
    summary["ms_per_frame"] = 1000 * elapsed
    return summary


def run(frame_count: int, demo: bool) -> list[dict]:
    rows = []
    cases = [("1920x1080", canvas(1080, 1920, 28, 700)), ("1080x1920", canvas(1920, 1080, 500, 28))]
    for name, photo in cases:
        for size in (512, 64):
            prepared = prepare_portrait(photo, size, "face")
            frames = stand_in_frames(prepared.image, frame_count)
            for mode, options in MODES.items():
                rows.append({"photo": name, "frames": f"stand-in {size} px", "box": list(prepared.info["box"]),
                             "mode": mode, **measure(photo, prepared.info, frames, options)})
    if demo:
        photo, info, frames = demo_case(frame_count)
        for mode, options in MODES.items():
            if mode.startswith("face"):
                continue  # the drawn portrait has no detectable face box
            rows.append({"photo": "1920x1080", "frames": "demo model 64 px", "box": list(info["box"]),
                         "mode": mode, **measure(photo, info, frames, options)})
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    lines = ["| photo | frames | crop box | paste | outside | seam step | photo grad | ratio | ramp offset "
             "| ms/frame |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['photo']} | {r['frames']} | {tuple(r['box'])} | {r['mode']} | {r['outside_error']:.4f} "
                     f"| {r['seam_step']:.4f} | {r['photo_gradient']:.4f} | {r['seam_ratio']:.2f} "
                     f"| {r['ramp_colour_offset']:.4f} | {r['ms_per_frame']:.0f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="frames per case")
    parser.add_argument("--demo", action="store_true", help="add the demo model's own frames (about a minute)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = run(args.frames, args.demo)
    print("\n".join(format_rows(rows)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
