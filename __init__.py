"""ComfyUI entry point of the EMO node pack (clone this repository into ComfyUI/custom_nodes/).

ComfyUI imports this folder as a package named after the folder; the nodes (`.nodes`) import the
library (`.emo`) package-relatively, so the pack puts nothing on sys.path and shadows no other
pack's modules. (The command line uses the same library as the top-level package `emo`.)
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
