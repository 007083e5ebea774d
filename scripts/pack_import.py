"""Import the pack's nodes outside ComfyUI (tests, scripts/, bench/), the way ComfyUI does.

The nodes import the library package-relatively (`from ..emo.audio import ...`), so they only
import as part of the pack: ComfyUI loads the pack folder as a package named after the folder.
`install()` does the same under the fixed name PACK_NAME and makes `import nodes` and
`PACK_NAME.emo` answer with the modules `PACK_NAME.nodes` and the library `emo` themselves (the
same objects, never a second copy), so code that uses both `emo` and `nodes` sees one library.

    from scripts import pack_import; pack_import.install()   # then: from nodes.sampler import EMOSampler
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_emo"  # the package name the pack folder gets outside ComfyUI


class PackImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports PACK_NAME from the pack folder (its `__init__.py`, as ComfyUI does), and answers
    each alias with the module of its target name."""

    ALIASES = {"nodes": f"{PACK_NAME}.nodes", f"{PACK_NAME}.emo": "emo"}

    def find_spec(self, fullname, path=None, target=None):
        if fullname == PACK_NAME:
            return importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                          submodule_search_locations=[str(REPO)])
        for alias, real in self.ALIASES.items():
            if fullname == alias or fullname.startswith(alias + "."):
                return importlib.machinery.ModuleSpec(fullname, self, origin=real + fullname[len(alias):])
        return None

    def create_module(self, spec):
        module = importlib.import_module(spec.origin)
        spec.loader_state = module.__spec__  # the import system overwrites __spec__; exec_module restores it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Put the importer first on sys.meta_path (once), with the repository importable as `emo`."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if not any(isinstance(finder, PackImporter) for finder in sys.meta_path):
        sys.meta_path.insert(0, PackImporter())
