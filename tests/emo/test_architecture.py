"""The core library stays a plain library: no ComfyUI imports anywhere under emo/."""

import ast

from tests.helpers import REPO

COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "execution"}


def test_emo_never_imports_comfyui():
    offenders = []
    for path in sorted((REPO / "emo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in COMFY_MODULES]
    assert offenders == []
