"""Shared fixtures (tiny random EMO models and checkpoints, made here), how the tests import
the pack whatever its folder is called, and the list of skipped tests at the end of a run.

Why the tests work from any clone folder (`emo`, `ComfyUI-EMO`, `main`, custom_nodes/...):

- The pack's folder has an `__init__.py` (ComfyUI imports the folder as a package), so pytest
  would import that folder under its own name, whatever the name is: as `emo` (hiding the
  library `emo/`), as `ComfyUI-EMO` (not a module name: "attempted relative import with no
  known parent package"), or as `main` (a second copy of the nodes). Two things stop it:
  1. tests/ and its folders have no `__init__.py`: pytest names test modules from the rootdir
     (`tests.emo.test_cli`) instead of walking up the chain of `__init__.py` files into the
     pack folder;
  2. `PackRootIsNotATestPackage` (registered below) collects the pack folder as a plain
     directory, so pytest never imports the pack's `__init__.py` to run package-level setup.
- Node tests import `nodes...`; `scripts/pack_import.py` answers that import with the pack loaded
  the way ComfyUI loads it (the pack folder as a package, under a fixed name), and maps
  `<pack>.emo...` to the library `emo...`, since the nodes import the library package-relatively
  (`from ..emo...`): the library exists once in the test process.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from scripts import pack_import
from tests.helpers import REPO, fixtures_required, randomize_

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# How the node tests import the pack (the nodes import the library package-relatively):
# scripts/pack_import.py, shared with scripts/ and bench/.
pack_import.install()


class PackRootIsNotATestPackage:
    """Collect the pack folder (which has ComfyUI's `__init__.py`) as a plain directory."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if Path(path) == REPO:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    # A conftest's own collection hooks apply only below its folder; a registered plugin's
    # apply everywhere, including to the pack folder above tests/.
    if not config.pluginmanager.has_plugin("emo-pack-root"):
        config.pluginmanager.register(PackRootIsNotATestPackage(), "emo-pack-root")


# ---- what was skipped, and why ---------------------------------------------------------------
def skip_reasons(reports) -> list[tuple[str, int, str]]:
    """(reason, count, first test) for each distinct reason, most frequent first."""
    counts, first = Counter(), {}
    for report in reports:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        counts[reason] += 1
        first.setdefault(reason, report.nodeid)
    return [(reason, count, first[reason]) for reason, count in counts.most_common()]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reasons = skip_reasons(terminalreporter.stats.get("skipped", []))
    if not reasons:
        return
    total = sum(count for _, count, _ in reasons)
    terminalreporter.section(f"{total} skipped: what and why", sep="-")
    for reason, count, nodeid in reasons:
        terminalreporter.write_line(f"{count:4d} x {reason}  (e.g. {nodeid})")
    if not fixtures_required():
        terminalreporter.write_line("(CI sets EMO_REQUIRE_FIXTURES=1: tests that need shared fixtures fail "
                                    "there instead of skipping)")


# ---- tiny models ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model():
    from emo.model import EMOModel

    return randomize_(EMOModel.from_preset("tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from emo.checkpoints import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
