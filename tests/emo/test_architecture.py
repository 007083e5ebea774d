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


def _imported_modules(path, package: str) -> set[str]:
    """Absolute names of the emo modules `path` imports (relative imports resolved)."""
    parts = package.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "emo" or name.startswith("emo.")}


def _module_name(path) -> tuple[str, str]:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def test_nothing_imports_the_command_line():
    offenders = []
    for path in sorted((REPO / "emo").rglob("*.py")):
        name, package = _module_name(path)
        if name in ("emo.cli", "emo.__main__"):
            continue
        if "emo.cli" in _imported_modules(path, package):
            offenders.append(name)
    assert offenders == []


def test_shared_blocks_and_sampling_loop_name_no_family():
    """emo/models/ and emo/pipeline.py know no family: they import nothing from emo.families and
    never spell a family's name in code (docstrings and comments aside)."""
    offenders = []
    paths = sorted((REPO / "emo" / "models").rglob("*.py")) + [REPO / "emo" / "pipeline.py"]
    for path in paths:
        name, package = _module_name(path)
        if any(m.startswith("emo.families") for m in _imported_modules(path, package)):
            offenders.append(f"{name} imports emo.families")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute, ast.arg)):
                word = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "arg", None)
                if word and any(f in word.lower() for f in ("hallo", "echomimic")):
                    offenders.append(f"{name}: {word}")
    assert offenders == []


def test_core_modules_import_without_cycles():
    """Every emo module imports on its own in a fresh interpreter (a cycle shows as an
    ImportError for whichever module comes first)."""
    import subprocess
    import sys

    names = [_module_name(p)[0] for p in sorted((REPO / "emo").rglob("*.py")) if p.name != "__main__.py"]
    script = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for first in ("emo.families", "emo.models", "emo.model", "emo.pipeline", "emo.runtime.jobs", "emo.batch"):
        result = subprocess.run([sys.executable, "-c", script, first, *names], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"importing {first} first: {result.stderr[-2000:]}"
