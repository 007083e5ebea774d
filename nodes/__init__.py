"""The EMO nodes for ComfyUI, one module per stage; `comfy_services` is their only link to
ComfyUI's services. Class ids carry an `EMO` prefix so they never collide with other packs and
never change (saved workflows keep loading); display names read as one family ("EMO ...") in
the node library, under EMO/loaders, EMO/conditioning, EMO/sampling and EMO/video."""

from . import comfy_services
from .audio import EMOAudioEncode
from .model import EMOComponentLoader, EMOEchoMimicLoader, EMOHalloLoader, EMOModelLoader
from .reference import EMOFaceRegionMask, EMOLoadReference
from .sample_to_video import EMOSampleToVideo
from .sampler import EMOSampler
from .paste_back import EMOPasteBack
from .speed import EMOSpeedControl
from .vocals import EMOSeparateVocals
from .video import EMOVideoCombine

comfy_services.register_model_folder()
comfy_services.install_samples()  # the shipped workflows' inputs, never over a user's file

# class id -> class, in pipeline order (the order the node library lists them).
NODE_CLASS_MAPPINGS = {
    "EMOModelLoader": EMOModelLoader,
    "EMOComponentLoader": EMOComponentLoader,
    "EMOHalloLoader": EMOHalloLoader,
    "EMOEchoMimicLoader": EMOEchoMimicLoader,
    "EMOLoadReference": EMOLoadReference,
    "EMOSeparateVocals": EMOSeparateVocals,
    "EMOAudioEncode": EMOAudioEncode,
    "EMOFaceRegionMask": EMOFaceRegionMask,
    "EMOSpeedControl": EMOSpeedControl,
    "EMOSampler": EMOSampler,
    "EMOSampleToVideo": EMOSampleToVideo,
    "EMOPasteBack": EMOPasteBack,
    "EMOVideoCombine": EMOVideoCombine,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "EMOModelLoader": "EMO Load Checkpoint",
    "EMOComponentLoader": "EMO Build From SD1.5 Parts",
    "EMOHalloLoader": "EMO Load Hallo",
    "EMOEchoMimicLoader": "EMO Load EchoMimic",
    "EMOLoadReference": "EMO Load Reference",
    "EMOSeparateVocals": "EMO Separate Vocals",
    "EMOAudioEncode": "EMO Audio Encode",
    "EMOFaceRegionMask": "EMO Face Region Mask",
    "EMOSpeedControl": "EMO Speed Control",
    "EMOSampler": "EMO Sampler",
    "EMOSampleToVideo": "EMO Sample To Video",
    "EMOPasteBack": "EMO Paste Back",
    "EMOVideoCombine": "EMO Video Combine",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
