"""Peak memory against the audio's length: the command line and the ComfyUI node graph.

    python bench/memory.py [--minutes 0.5 1 10] [--steps 2] [--json out.json]

Each measurement runs in a fresh process on the bundled demo model and its sample portrait, with
the sample voice repeated to the length asked for, and reports that process's peak resident
memory (ru_maxrss). Memory is what is measured: the step count does not change it, so few steps
keep the run short.

- cli:    `python -m emo generate` (streams clips into the file);
- nodes:  EMO Load Checkpoint -> EMO Load Reference -> EMO Audio Encode -> EMO Speed Control ->
          EMO Sample To Video, called as ComfyUI calls them (streams clips into the file);
- nodes-image: the same graph with EMO Sampler + EMO Video Combine, which hold every frame as
          one IMAGE (shown for comparison; grows with the length by design).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "emo" / "assets"


def long_voice(minutes: float, folder: Path) -> Path:
    """The sample voice repeated to `minutes`, as a 16 kHz wav."""
    sys.path.insert(0, str(REPO))
    import torch

    from emo.audio import load_audio, resample
    from tests.helpers import write_wav

    waveform, rate = load_audio(ASSETS / "sample_voice.wav")
    waveform = resample(waveform.mean(0, keepdim=True), rate, 16000)
    samples = int(minutes * 60 * 16000)
    repeats = samples // waveform.shape[1] + 1
    path = folder / f"voice_{minutes:g}min.wav"
    write_wav(path, torch.cat([waveform] * repeats, dim=1)[:, :samples], 16000)
    return path


def _run(command: list[str], env: dict | None = None) -> dict:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["seconds"] = round(seconds, 1)
    return report


_CLI = textwrap.dedent("""
    import json, resource, sys
    from emo.cli import main
    status = main(sys.argv[1:])
    print(json.dumps({"status": status, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

_NODES = textwrap.dedent("""
    import json, resource, sys
    import torch
    from scripts import pack_import

    pack_import.install()  # the nodes import the library package-relatively, as in ComfyUI
    from emo.audio import load_audio
    from emo.image import load_image
    from nodes import comfy_services as services
    from nodes.model import EMOModelLoader
    from nodes.reference import EMOLoadReference, EMOFaceRegionMask
    from nodes.audio import EMOAudioEncode
    from nodes.speed import EMOSpeedControl
    from nodes.sampler import EMOSampler
    from nodes.sample_to_video import EMOSampleToVideo
    from nodes.video import EMOVideoCombine
    voice, out, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    services.set_output_directories(out, out)
    torch.set_num_threads(2)
    (model,) = EMOModelLoader().load("emo-demo.safetensors", "fp32")
    photo = load_image("emo/assets/sample_portrait.png")[None]
    mask = load_image("emo/assets/sample_portrait_mask.png").mean(-1)[None]
    reference, image = EMOLoadReference().prepare(photo, 0, "center", 0.6, model)
    (region,) = EMOFaceRegionMask().make_mask(image, 0.2, mask, reference)
    waveform, rate = load_audio(voice)
    audio = {"waveform": waveform[None], "sample_rate": rate}
    features, frames, used = EMOAudioEncode().encode(audio, model, 0.0)["result"]
    (speed,) = EMOSpeedControl().make(0.5)
    common = dict(model=model, reference=reference, audio_features=features, seed=0, steps=steps, cfg=-1.0,
                  scheduler="ddim", frames_per_clip=0, motion_frames=-1, face_mask=region, speed=speed)
    if mode == "nodes":
        EMOSampleToVideo().sample(**common, filename_prefix="bench", format="video/h264-mp4", crf=23,
                                  save_output=True, preview_frames=16, audio=used)
    else:
        images, fps = EMOSampler().sample(**common)["result"]
        EMOVideoCombine().combine(images, fps, "bench", "video/h264-mp4", 23, True, used)
    print(json.dumps({"frames": frames, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def measure(mode: str, voice: Path, steps: int, folder: Path) -> dict:
    if mode == "cli":
        out = folder / f"{voice.stem}_cli.mp4"
        return _run([sys.executable, "-c", _CLI, "generate", "--quiet", "--image", str(ASSETS / "sample_portrait.png"),
                     "--mask", str(ASSETS / "sample_portrait_mask.png"), "--audio", str(voice), "--out", str(out),
                     "--steps", str(steps)])
    return _run([sys.executable, "-c", _NODES, str(voice), str(folder / mode), str(steps), mode])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.5, 1.0, 10.0])
    parser.add_argument("--modes", nargs="+", default=["cli", "nodes"], choices=["cli", "nodes", "nodes-image"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for minutes in args.minutes:
            voice = long_voice(minutes, scratch)
            for mode in args.modes:
                report = measure(mode, voice, args.steps, scratch)
                rows.append({"mode": mode, "minutes": minutes, **report})
                print(f"{mode:12s} {minutes:6g} min  peak {report['peak_mb']:7.0f} MB  {report['seconds']:7.1f} s",
                      flush=True)
    for mode in args.modes:
        peaks = [r for r in rows if r["mode"] == mode]
        if len(peaks) > 1:
            print(f"{mode}: peak at {peaks[-1]['minutes']:g} min / at {peaks[0]['minutes']:g} min = "
                  f"{peaks[-1]['peak_mb'] / peaks[0]['peak_mb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
