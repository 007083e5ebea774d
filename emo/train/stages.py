"""What each training stage trains (paper §3.3 "Training Strategies").

Every parameter of `EMOModel` belongs to exactly one group:

- ``reference_net``      the ReferenceNet
- ``backbone_spatial``   the backbone's SD layers except the audio-attention
- ``audio_attention``    the backbone's `attn2` + `norm2` (SD's text cross-attention, here audio)
- ``audio_projection``   wav2vec2 window -> audio tokens
- ``face_locator``
- ``temporal``           the backbone's motion modules (AnimateDiff), without the speed layers
- ``speed_layers``       the speed cross-attention inside the motion modules (``.speed_``)
- ``speed_encoder``
- ``vae``, ``audio_encoder``  always frozen

Stages:

1. image pretraining: ``reference_net``, ``backbone_spatial``, ``face_locator``. The paper trains
   "the Backbone Network, the ReferenceNet, and the Face Locator" on single frames. It has no audio
   in this stage; with zero audio tokens the audio-attention would only receive a gradient in its
   output bias, so it is left to stage 2, where the paper introduces the audio layers.
2. video: ``temporal``, ``audio_attention``, ``audio_projection``. The paper says this stage adds
   the temporal modules and the audio layers; it does not say whether the spatial layers keep
   training. We freeze them, as Hallo does (its stage 2 trains only motion and audio modules), which
   also keeps the ReferenceNet's identity features fixed; set `trainable:` in the config (e.g. add
   ``reference_net``, ``backbone_spatial``, ``face_locator``) to train them too.
3. speed: ``temporal``, ``speed_layers``, ``speed_encoder``. The paper: "we only train the temporal
   module and the speed layer in this stage", deliberately leaving out the audio layers, so the
   model keeps taking the motion from the audio rather than from the speed signal.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..models.temporal import SPEED_KEY_MARKER

GROUPS = ("reference_net", "backbone_spatial", "audio_attention", "audio_projection", "face_locator",
          "temporal", "speed_layers", "speed_encoder", "vae", "audio_encoder")
FROZEN_GROUPS = ("vae", "audio_encoder")
ALIASES = {
    "backbone": ("backbone_spatial", "audio_attention"),
    "audio_layers": ("audio_attention", "audio_projection"),
}
STAGE_GROUPS = {
    1: ("reference_net", "backbone_spatial", "face_locator"),
    2: ("temporal", "audio_attention", "audio_projection"),
    3: ("temporal", "speed_layers", "speed_encoder"),
}


def group_of(name: str) -> str:
    """The group of a parameter name of EMOModel (see the module docstring)."""
    top = name.split(".", 1)[0]
    if top != "backbone":
        if top not in GROUPS:
            raise ValueError(f"group_of: parameter {name!r} belongs to no training group")
        return top
    if ".motion_modules." in name:
        return "speed_layers" if SPEED_KEY_MARKER in name else "temporal"
    if ".transformer_blocks." in name and (".attn2." in name or ".norm2." in name):
        return "audio_attention"
    return "backbone_spatial"


@dataclass(frozen=True)
class Stage:
    number: int
    groups: tuple[str, ...]

    @property
    def uses_video(self) -> bool:
        """Stages 2 and 3 train on clips of n motion + f frames; stage 1 on single frames."""
        return self.number >= 2

    @property
    def uses_audio(self) -> bool:
        return self.number >= 2

    @property
    def uses_speed(self) -> bool:
        return self.number >= 3

    def trains(self, group: str) -> bool:
        return group in self.groups


def resolve_stage(number: int, trainable: list[str] | None = None) -> Stage:
    """The stage with its default groups, or the groups of `trainable` (aliases expanded)."""
    if number not in STAGE_GROUPS:
        hint = " (stage vae trains the autoencoder alone: emo.train.autoencoder)" if number == "vae" else ""
        raise ValueError(f"the diffusion training stages are 1, 2 and 3, got {number!r}{hint}")
    if trainable is None:
        return Stage(number, STAGE_GROUPS[number])
    groups: list[str] = []
    for name in trainable:
        expanded = ALIASES.get(name, (name,))
        for group in expanded:
            if group not in GROUPS:
                raise ValueError(f"train config: unknown parameter group {name!r} in trainable; choose from "
                                 f"{sorted(set(GROUPS) - set(FROZEN_GROUPS)) + sorted(ALIASES)}")
            if group in FROZEN_GROUPS:
                raise ValueError(f"train config: {group} is always frozen (EMO never trains it); remove it "
                                 "from trainable")
            if group not in groups:
                groups.append(group)
    if not groups:
        raise ValueError("train config: trainable is empty; list at least one parameter group")
    return Stage(number, tuple(groups))


def select_trainable(model: nn.Module, stage: Stage) -> dict[str, nn.Parameter]:
    """Set requires_grad on the stage's parameters only; returns them by name."""
    selected = {}
    for name, param in model.named_parameters():
        train = stage.trains(group_of(name))
        param.requires_grad_(train)
        if train:
            selected[name] = param
    return selected
