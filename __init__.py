"""ComfyUI entry point of the EMO node pack (clone this repository into ComfyUI/custom_nodes/).

ComfyUI imports this folder as a package named after the folder. The core library `emo/`
is imported as the top-level package `emo`, so the folder goes on sys.path first; the nodes
come from the sub-package `.nodes` (a relative import: ComfyUI's own top-level module is also
called `nodes`).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
