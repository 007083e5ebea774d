"""EMO's networks, one module per component."""

from .emo_model import EMOModel
from .reference_attention import ReferenceFeatures
from .unet import Backbone, ReferenceNet

__all__ = ["EMOModel", "ReferenceFeatures", "Backbone", "ReferenceNet"]
