"""The shared networks of the EMO lineage, one module per component. They name no model family;
`emo.model.EMOModel` puts them together with a family's own parts."""

from .reference_attention import ReferenceFeatures
from .unet import Backbone, BackboneOptions, ReferenceNet, ReferenceOptions, SitePlan

__all__ = ["Backbone", "BackboneOptions", "ReferenceFeatures", "ReferenceNet", "ReferenceOptions", "SitePlan"]
