"""Write the demo model's bundled sample inputs: a held-out synthetic talker's first frame (the
portrait), its face mask and its voice.

The talker's seed (SAMPLE_SEED) is in the held-out range (>= emo.synthetic.EVALUATION_SEED_START)
and not one `emo evaluate` draws, so neither training nor evaluation has seen this face or voice.
Run by scripts/train_demo_model.sh; the files are committed in emo/assets/ so that
`python -m emo generate` works on a fresh clone:

    python scripts/make_demo_sample.py emo/assets
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from emo import synthetic
from emo.face import expand_box

SAMPLE_SEED = synthetic.EVALUATION_SEED_START + 100
SIZE = 256  # pixels; the demo model works at 64 and `generate` resizes (4x so the file is pleasant to view)
SECONDS = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for sample_portrait.png, sample_portrait_mask.png, sample_voice.wav")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    identity = synthetic.make_identity(SAMPLE_SEED)
    Image.fromarray(synthetic.render_frame(identity, SIZE)).save(args.out / "sample_portrait.png", optimize=True)
    # The face region as `emo evaluate` gives it: the face box grown by 20 %.
    box = tuple(int(round(v)) for v in synthetic.face_box(identity, SIZE))
    x0, y0, x1, y1 = expand_box(box, 0.2, SIZE, SIZE)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(args.out / "sample_portrait_mask.png", optimize=True)
    audio = synthetic.synthesize_voice(SAMPLE_SEED, SECONDS, identity.voice_f0)
    with wave.open(str(args.out / "sample_voice.wav"), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(synthetic.SAMPLE_RATE)
        file.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    print(f"wrote the sample portrait, mask and voice of held-out talker {SAMPLE_SEED} to {args.out}")


if __name__ == "__main__":
    main()
