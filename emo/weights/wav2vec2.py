"""wav2vec2 (EMO's audio encoder, wav2vec2-base-960h for sd15) in transformers' key names.

Accepted:
- a Hugging Face folder (`config.json` + `model.safetensors` or `pytorch_model.bin`) of a
  `Wav2Vec2Model` or a `Wav2Vec2ForCTC` (the 960h release: keys under `wav2vec2.` plus a
  `lm_head`, which EMO does not use); its config.json is compared with EMO's;
- a single `.safetensors`/`.bin` as in ComfyUI's `models/audio_encoders/` (ComfyUI's own
  wav2vec2 uses the transformers names, with or without the `wav2vec2.` prefix).
The positional convolution's weight norm is stored either the old way (`weight_g`, `weight_v`)
or the current one (`parametrizations.weight.original0/1`); both load. Heads EMO does not use
(`lm_head.*`, the pre-training quantizer and projections, `masked_spec_embed` when EMO's
encoder has no masking) are skipped and logged.
"""

from __future__ import annotations

import logging
import os

from ..config import EMOConfig
from . import layout
from .files import WeightFile, listing, open_folder_weights, open_weights, read_folder_config, existing_path
from .identify import describe_weights
from .layout import Plan, Shape

logger = logging.getLogger(__name__)

WHAT = "wav2vec2"
# Weight-shaping and behaviour fields of a transformers Wav2Vec2Config that must agree.
_FIELDS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
           "conv_dim": None, "conv_stride": None, "conv_kernel": None, "conv_bias": False,
           "feat_extract_norm": "group", "do_stable_layer_norm": False, "num_conv_pos_embeddings": 128,
           "num_conv_pos_embedding_groups": 16}
_UNUSED_HEADS = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "dropout_features.")
_PREFIXES = ("wav2vec2.", "audio_encoder.")


def expected_text(config: EMOConfig) -> str:
    w = config.audio.wav2vec2
    name = " (wav2vec2-base-960h)" if (w["hidden_size"], w["num_hidden_layers"]) == (768, 12) else ""
    return (f"a wav2vec2 encoder with hidden size {w['hidden_size']} and {w['num_hidden_layers']} "
            f"layers{name}")


def _rename(key: str, prefix: str, expected: dict[str, Shape]) -> str | None:
    if prefix and not key.startswith(prefix):
        if prefix == "audio_encoder.":  # the encoder inside an EMO checkpoint: skip the rest
            return None
        return None if key.startswith(_UNUSED_HEADS) else key  # CTC heads sit outside `wav2vec2.`
    key = key[len(prefix):]
    if key.startswith(_UNUSED_HEADS) or (key == "masked_spec_embed" and key not in expected):
        return None
    if key.endswith(".weight_g"):
        return key[: -len("weight_g")] + "parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len("weight_v")] + "parametrizations.weight.original1"
    return key


def plan_wav2vec2(path: str | os.PathLike | WeightFile, config: EMOConfig, expected: dict[str, Shape]) -> Plan:
    """Plan EMO's `audio_encoder` (a transformers Wav2Vec2Model) from a folder or a file."""
    text = expected_text(config)
    if isinstance(path, WeightFile):
        source = path
    else:
        path = existing_path(path, WHAT, "give the wav2vec2-base-960h folder "
                             "(config.json + model.safetensors) or a single .safetensors file.")
        if path.is_dir():
            cfg_path, found = read_folder_config(path, WHAT, ("model_type", "wav2vec2"), f"wav2vec2; EMO needs {text}",
                                                 "give a Hugging Face model folder or a single weights file.")
            layout.check_config(found, config.audio.wav2vec2, _FIELDS, what=WHAT, path=cfg_path,
                                hint=f"EMO needs {text}.")
            source = open_folder_weights(path, ("model", "pytorch_model"), WHAT)
        else:
            source = open_weights(path, WHAT)
    view = source.meta_view()
    prefix = next((p for p in _PREFIXES if any(k.startswith(p + "encoder.") for k in view)), "")
    origins, shapes, unused = layout.renamed(view, lambda k: _rename(k, prefix, expected), what=WHAT,
                                             path=source.path)
    plan = Plan(WHAT, source.path, source, origins, shapes, found=describe_weights(view))
    if unused:
        groups = sorted({next((f"{h}*" for h in _UNUSED_HEADS if h in k), k) for k in unused})
        plan.notes.append(f"{source.path.name}: skipped {len(unused)} tensors EMO does not use "
                          f"({listing(groups, 6)})")
    layout.check(plan, expected, expected_text=text)
    return plan
