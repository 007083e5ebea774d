"""The Hallo lineage: Hallo, Hallo2 and JoyHallo, what tells their `net.pth` files apart, and
what each runs with.

All three save the same five networks under the same names (`reference_unet`,
`denoising_unet`, `face_locator`, `imageproj`, `audioproj`) and are the same network except:

- **Hallo2** (fudan-generative-vision/hallo2, commit 58a9aa6): the model code and the `net.pth`
  layout are Hallo's, key for key and shape for shape, so the file alone cannot say which it is;
  the folder can (`pretrained_models/hallo2/net.pth`). Its inference (`scripts/inference_long.py`,
  `configs/inference/long.yaml`) differs in two places: long audio is cut into 60 s pieces, each
  encoded by wav2vec2 on its own (`hallo2.hallo2_audio_features`), and the motion frames' pixels
  are masked at random outside the face before encoding (`use_mask`, `mask_rate: 0.25`; see
  `hallo2.mask_motion_pixels`). Everything else (512 px, 16-frame clips, 2 motion frames, 40 DDIM
  steps, guidance 3.5, weights 1/1/1) is Hallo's.
- **JoyHallo** (jdh-algo/JoyHallo, commit dbbe5b2): the audio modules compute one
  cross-attention (`attn2_0`) and mask it three times (its file has no `attn2_1`/`attn2_2`:
  160 fewer tensors at full size); the speech encoder is chinese-wav2vec2-base (same wav2vec2
  architecture, other weights); its inference passes no (pose, face, lip) weights, so the three
  regions add up unscaled. Otherwise Hallo's numbers (512 px, 16 frames, 2 motion frames, 40
  steps, guidance 3.5, zero-SNR v-prediction DDIM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HalloVariant:
    """One release of the lineage.

    name: the `variant` family option; title: how users know it; repo: where its code lives;
    net_path / wav2vec2_path: where its own `pretrained_models` folder keeps the weights and the
    speech encoder; options: the family options it sets (beyond the architecture's);
    defaults: `InferenceDefaults` overrides (on top of Hallo's).
    """

    name: str
    title: str
    repo: str
    net_path: str
    wav2vec2_path: str
    options: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)


VARIANTS: dict[str, HalloVariant] = {
    "hallo": HalloVariant("hallo", "Hallo", "fudan-generative-vision/hallo", "hallo/net.pth",
                          "wav2vec/wav2vec2-base-960h"),
    "hallo2": HalloVariant("hallo2", "Hallo2", "fudan-generative-vision/hallo2", "hallo2/net.pth",
                           "wav2vec/wav2vec2-base-960h",
                           options={"audio_segment_seconds": 60.0, "motion_mask_rate": 0.25}),
    "joyhallo": HalloVariant("joyhallo", "JoyHallo", "jdh-algo/JoyHallo", "joyhallo/net.pth",
                             "chinese-wav2vec2-base", options={"shared_audio_attention": True}),
}


def variant(name: str) -> HalloVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Hallo variant {name!r}; this version knows {', '.join(VARIANTS)}.") from None


def _audio_attention_keys(keys: Iterable[str]) -> tuple[bool, bool]:
    """(has attn2_0, has attn2_1 or attn2_2) among the audio modules' keys."""
    shared = regional = False
    for key in keys:
        if ".audio_modules." not in key:
            continue
        shared = shared or ".attn2_0." in key
        regional = regional or ".attn2_1." in key or ".attn2_2." in key
        if shared and regional:
            break
    return shared, regional


def detect_variant(keys: Iterable[str], path: str | os.PathLike | None = None) -> str:
    """Which release a Hallo-lineage `net.pth` is: "joyhallo" from its keys (one audio
    cross-attention), else "hallo2" when the file sits in a folder named hallo2 (or its name says
    so), else "hallo". Raises ValueError for a file that has no Hallo audio modules."""
    shared, regional = _audio_attention_keys(keys)
    if not shared:
        raise ValueError("this file has no Hallo audio modules (denoising_unet.*.audio_modules.*.attn2_0); "
                         "it is not a Hallo, Hallo2 or JoyHallo net.pth.")
    if not regional:
        return "joyhallo"
    if path is not None:
        parts = [p.lower() for p in Path(path).resolve().parts[-3:]]
        if any("hallo2" in p for p in parts):
            return "hallo2"
    return "hallo"


def check_variant_keys(name: str, keys: Iterable[str]) -> None:
    """A clear error when a file's audio attention contradicts the variant asked for."""
    shared, regional = _audio_attention_keys(keys)
    if shared and not regional and not variant(name).options.get("shared_audio_attention"):
        raise ValueError(f"this net.pth is a JoyHallo file (one audio cross-attention, no attn2_1/attn2_2) "
                         f"but {variant(name).title} was asked for; load it as JoyHallo (or let the loader "
                         "detect it).")
    if regional and variant(name).options.get("shared_audio_attention"):
        raise ValueError(f"this net.pth has Hallo's three regional audio cross-attentions (attn2_1, attn2_2), "
                         f"but {variant(name).title} was asked for; load it as Hallo or Hallo2.")


def describe_net_file(path: str | os.PathLike) -> dict:
    """`emo info` for a Hallo-lineage `net.pth`: {"name", "description", "defaults"} (what it
    would run with once converted)."""
    from ...weights.files import open_weights
    from .convert import hallo_sd15_config

    weights = open_weights(path, "Hallo net.pth")
    name = detect_variant(list(weights), path)
    config = hallo_sd15_config(name)
    v = variant(name)
    n = len(weights)
    how = ("from its keys (one shared audio cross-attention)" if name == "joyhallo"
           else "from its folder name (Hallo2's keys are Hallo's)" if name == "hallo2"
           else "from its keys (three regional audio cross-attentions; a file in a 'hallo2' folder "
                "would be taken as Hallo2)")
    return {"name": f"{v.title} net.pth ({v.repo})",
            "description": f"{n} tensors; {v.title} {how}. Load it with `emo convert --from {name}` or the "
                           f"EMO Load Hallo node; its speech encoder is pretrained_models/{v.wav2vec2_path}.",
            "defaults": vars(config.defaults), "family": "hallo", "variant": name}
