"""Shared fixtures: a clean gin config and no third-party autoloading unless a test asks."""
from __future__ import annotations

import gin
import pytest
import torch


@pytest.fixture(autouse=True)
def _clean_gin_and_seed():
    gin.clear_config()
    torch.manual_seed(0)
    yield
    gin.clear_config()


@pytest.fixture
def manager():
    """A fresh plugin manager with the built-ins only."""
    import fp

    return fp.make_manager(autoload=False)


@pytest.fixture
def bind():
    """Add gin bindings inside a test (the config is cleared after each test)."""
    def parse(*bindings):
        with gin.unlock_config():
            gin.parse_config(list(bindings))
    return parse
