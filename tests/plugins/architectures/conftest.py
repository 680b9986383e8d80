"""The built-in architecture registry, built once for this folder."""
from __future__ import annotations

import pytest

import fp


@pytest.fixture(scope="module")
def architectures():
    return fp.make_manager(autoload=False).registries["architectures"]


def count(model, module_type) -> int:
    return sum(isinstance(m, module_type) for m in model.modules())


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
