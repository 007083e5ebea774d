"""Fixtures of the weight-loading tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def source(tiny_model):
    """The model whose weights the tests write in the formats users have, then load back."""
    return tiny_model
