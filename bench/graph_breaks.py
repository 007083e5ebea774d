"""Count torch.compile graph breaks in the backbone and the ReferenceNet, and say where they are.

    python bench/graph_breaks.py [--family emo|hallo] [--no-guidance] [--json PATH]

Runs `torch._dynamo.explain` on one call of each network with the very arguments the pipeline
gives them: a 1-step clip of a tiny model (EMO's `tiny` preset, or Hallo's structure at tiny
width) goes through `EMOPipeline.iter_clips` with guidance (rows (False, True)) or without, and
the first ReferenceNet and backbone calls are recorded. CPU. Prints the number of graphs and
breaks per network, then each distinct break reason with the line of code it comes from and how
often it occurs. A network that compiles into one graph shows "1 graph(s), 0 break(s)".
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def explain(fn, *args, **kwargs) -> dict:
    """Dynamo's view of one call: {"graphs", "breaks", "reasons": [(reason, where, count)]}.

    `where` is the innermost frame of the user stack (file:line function), or "" when dynamo
    gave none."""
    import torch._dynamo

    torch._dynamo.reset()
    result = torch._dynamo.explain(fn)(*args, **kwargs)
    counted = collections.Counter()
    for item in result.break_reasons:
        frame = item.user_stack[-1] if item.user_stack else None
        where = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else ""
        counted[(item.reason.strip().splitlines()[0][:200], where)] += 1
    return {"graphs": result.graph_count, "breaks": result.graph_break_count,
            "reasons": [(reason, where, n) for (reason, where), n in counted.most_common()]}


def tiny_model(family: str):
    """A tiny random model of `family` ("emo": the `tiny` preset; "hallo": Hallo's structure at
    bench/side_by_side.py's tiny width, random weights)."""
    from emo.model import EMOModel

    if family == "emo":
        from tests.helpers import randomize_

        return randomize_(EMOModel.from_preset("tiny", seed=0)).eval()
    from vs_hallo import build_ours

    model, _ = build_ours("tiny", torch.float32, torch.device("cpu"), seed=0)
    return model


def pipeline_calls(model, guidance: bool = True, frames: int | None = None, size: int = 64) -> dict:
    """{"reference_net": (args, kwargs), "backbone": (args, kwargs)}: the first call of each that
    `EMOPipeline.iter_clips` makes in a 1-step clip (guidance 3.5, or none)."""
    from emo.audio import AudioFeatures
    from emo.pipeline import EMOPipeline, GenerationSettings

    pipe = EMOPipeline(model)
    cfg = model.config
    frames = frames or cfg.defaults.frames_per_clip
    g = torch.Generator().manual_seed(0)
    audio = AudioFeatures(torch.randn(frames, cfg.audio.num_layers, cfg.audio.hidden_size, generator=g),
                          fps=cfg.defaults.fps, sample_rate=16000,
                          waveform=torch.zeros(1, math.ceil(frames / cfg.defaults.fps * 16000)))
    mask = torch.zeros(size, size)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    face = {}
    if cfg.family == "hallo":  # Hallo's identity input: a face-recognition embedding
        from emo.families.hallo.options import HalloOptions

        width = HalloOptions.from_dict(cfg.family_options).face_embedding_dim
        face["face_embedding"] = torch.randn(width, generator=g)
    calls, originals = {}, {}
    for name in ("reference_net", "backbone"):
        originals[name] = getattr(model, name).forward

        def capture(*args, _name=name, **kwargs):
            calls.setdefault(_name, (args, kwargs))
            return originals[_name](*args, **kwargs)
        getattr(model, name).forward = capture
    try:
        settings = GenerationSettings(size=size, frames_per_clip=frames, steps=1,
                                      guidance_scale=3.5 if guidance else 1.0)
        next(pipe.iter_clips(torch.rand(size, size, 3, generator=g), audio, face_mask=mask, settings=settings,
                             **face))
    finally:
        for name in originals:
            del getattr(model, name).forward  # back to the class's forward
    return calls


def count_breaks(model, guidance: bool = True) -> dict:
    """{network: explain(...)} for the ReferenceNet and the backbone of `model` (eval, CPU)."""
    report = {}
    with torch.no_grad():
        for name, (args, kwargs) in pipeline_calls(model, guidance).items():
            report[name] = explain(getattr(model, name), *args, **kwargs)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="emo", choices=("emo", "hallo"))
    parser.add_argument("--no-guidance", action="store_true", help="batch 1, no reference rows")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    report = count_breaks(tiny_model(args.family), guidance=not args.no_guidance)
    for name, r in report.items():
        print(f"{name}: {r['graphs']} graph(s), {r['breaks']} break(s)")
        for reason, where, n in r["reasons"]:
            print(f"  {n:3d} x {where}: {reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
