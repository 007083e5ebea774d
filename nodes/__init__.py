"""The EMO nodes for ComfyUI, one module per stage; `comfy_services` is their only link to
ComfyUI's services. Class ids carry an `EMO` prefix so they never collide with other packs;
the display names are the ones the documentation and workflows use."""

from . import comfy_services
from .audio import EMOAudioEncode
from .model import EMOComponentLoader, EMOHalloLoader, EMOModelLoader
from .reference import EMOFaceRegionMask, EMOLoadReference
from .sampler import EMOSampler
from .speed import EMOSpeedControl
from .video import EMOVideoCombine

comfy_services.register_model_folder()

# class id -> class, in pipeline order (the order the node library lists them).
NODE_CLASS_MAPPINGS = {
    "EMOModelLoader": EMOModelLoader,
    "EMOComponentLoader": EMOComponentLoader,
    "EMOHalloLoader": EMOHalloLoader,
    "EMOLoadReference": EMOLoadReference,
    "EMOAudioEncode": EMOAudioEncode,
    "EMOFaceRegionMask": EMOFaceRegionMask,
    "EMOSpeedControl": EMOSpeedControl,
    "EMOSampler": EMOSampler,
    "EMOVideoCombine": EMOVideoCombine,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "EMOModelLoader": "EMOModelLoader",
    "EMOComponentLoader": "EMOComponentLoader",
    "EMOHalloLoader": "EMOHalloLoader",
    "EMOLoadReference": "LoadReference",
    "EMOAudioEncode": "AudioEncode",
    "EMOFaceRegionMask": "FaceRegionMask",
    "EMOSpeedControl": "SpeedControl",
    "EMOSampler": "EMOSampler",
    "EMOVideoCombine": "VideoCombine",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
