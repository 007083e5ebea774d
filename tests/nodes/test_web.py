"""The web extension's JavaScript tests (tests/web/*.test.mjs), run with Node.js when installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO


def test_web_extension_javascript():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed; run `node --test tests/web/` where it is")
    done = subprocess.run([node, "--test", "tests/web/"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def test_web_directory_holds_only_extension_modules():
    """ComfyUI imports every .js file under WEB_DIRECTORY in the browser: tests must live elsewhere."""
    files = sorted(p.name for p in (REPO / "web").rglob("*") if p.is_file())
    assert files == ["emo.js", "emo_preview.js"]
