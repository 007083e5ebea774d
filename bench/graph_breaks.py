"""Count torch.compile graph breaks in the backbone and the ReferenceNet, and say where they are.

    python bench/graph_breaks.py [--preset tiny] [--no-guidance] [--json PATH]

Runs `torch._dynamo.explain` on one call of each network with the inputs the pipeline gives them
(a guidance batch [uncond, cond] with reference_rows [False, True], motion frames, speed, face
features), on the CPU. Prints the number of graphs and breaks per network, then each distinct
break reason with the line of our code it comes from and how often it occurs. A network that
compiles into one graph shows "1 graph, 0 breaks".
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def pipeline_inputs(model, guidance: bool = True, frames: int = 4, motion: int = 2, side: int = 8,
                    seed: int = 0) -> dict:
    """The arguments of one ReferenceNet call and one backbone call, as the pipeline makes them."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    images = torch.randn(1, 1 + motion, 4, side, side, generator=g)
    tokens = torch.randn(1, frames, cfg.audio.num_tokens, cfg.audio_token_dim, generator=g)
    mask = torch.zeros(1, 1, side * cfg.latent_scale, side * cfg.latent_scale)
    mask[..., side * 2: side * 6, side * 2: side * 6] = 1
    batch = 2 if guidance else 1
    with torch.no_grad():
        reference = model.reference_net(images)
        speed = model.speed_encoder(torch.full((1, motion + frames), 0.5))
        face = model.face_locator(mask)
    return {
        "reference_net": ((images,), {}),
        "backbone": ((torch.randn(batch, 4, frames, side, side, generator=g), 500,
                      torch.cat([torch.zeros_like(tokens), tokens]) if guidance else tokens),
                     {"reference": reference, "speed": speed,
                      "reference_rows": torch.tensor([False, True]) if guidance else None,
                      "face_features": torch.cat([torch.zeros_like(face), face]) if guidance else face}),
    }


def count_breaks(model, guidance: bool = True) -> dict:
    """{network: explain(...)} for the ReferenceNet and the backbone of `model` (eval, CPU)."""
    calls = pipeline_inputs(model, guidance)
    report = {}
    with torch.no_grad():
        for name, (args, kwargs) in calls.items():
            report[name] = explain(getattr(model, name), *args, **kwargs)
    return report


def main(argv=None) -> int:
    from emo.models import EMOModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--no-guidance", action="store_true", help="batch 1, no reference_rows")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    model = EMOModel.from_preset(args.preset, seed=0).eval()
    report = count_breaks(model, guidance=not args.no_guidance)
    for name, r in report.items():
        print(f"{name}: {r['graphs']} graph(s), {r['breaks']} break(s)")
        for reason, where, n in r["reasons"]:
            print(f"  {n:3d} x {where}: {reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
