"""Model families: what makes each EMO-lineage model itself (EMO, Hallo, EchoMimic).

A family owns its conditioning (audio front end and tokens, identity inputs, region masks), its
attention processors and where they sit, its clip schedule, its checkpoint detection and
conversion, and its defaults. The shared blocks (`emo.models`) and the sampling loop
(`emo.pipeline`) name no family. ARCHITECTURE.md has the checklist for adding one.
"""

from __future__ import annotations

from .base import ModelFamily, VideoConditioning
from .emo import EMOFamily
from .hallo.family import HalloFamily

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (EMOFamily(), HalloFamily())}


def family_of(config) -> ModelFamily:
    """The family of a model config (its `family` field)."""
    try:
        return FAMILIES[config.family]
    except KeyError:
        raise ValueError(f"unknown model family {config.family!r}; this version knows "
                         f"{', '.join(sorted(FAMILIES))} - the checkpoint may need a newer version of the pack") from None


__all__ = ["FAMILIES", "ModelFamily", "VideoConditioning", "family_of"]
