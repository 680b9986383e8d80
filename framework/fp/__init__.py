"""flowprune: pruning research on the gradient-flow framework (Lubana & Dick, ICLR 2021).

Public API: ``fp.score``, ``fp.prune``, ``fp.load``, ``fp.save``, ``fp.build_model`` (any
registered architecture by name: built-in, ``torchvision.<model>``, ``timm.<model>``),
``fp.ScoreContext``, ``fp.operative_config``, ``fp.parse_experiment`` and ``fp.run_experiment``
(``fp run`` in Python), the plugin base classes ``fp.Measure``, ``fp.Dataset``, ``fp.Schedule``,
the ``fp.hookimpl`` marker, and the contract modules plugins may import: ``fp.errors``, ``fp.nn``
(shared network facts), ``fp.run``, ``fp.measure``, ``fp.data.dataset``, ``fp.data``, ``fp.schedule``,
``fp.hookspecs``, ``fp.validation`` and ``fp.discover``.
"""
from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

from fp.errors import FpError

if TYPE_CHECKING:  # pragma: no cover
    import os
    from typing import Sequence

    from fp.config.settings import Settings
    from fp.data.dataset import Dataset, Loader
    from fp.engine.experiment import run_experiment
    from fp.hookspecs import hookimpl, hookspec
    from fp.manager import Manager, make_manager
    from fp.measure import Measure
    from fp.pruning.api import prune
    from fp.pruning.arch import build_model
    from fp.pruning.serialize import load, save
    from fp.scoring import ScoreContext
    from fp.scoring.api import score
    from fp.schedule import PruneStep, Schedule
    from fp.validation import OneOf, Range

#: public name -> the module defining it, imported on first use so that ``import fp`` (and so
#: ``fp --help``) does not import torch
_LAZY = {"Dataset": "fp.data.dataset", "Loader": "fp.data.dataset", "hookimpl": "fp.hookspecs",
         "hookspec": "fp.hookspecs", "make_manager": "fp.manager", "Measure": "fp.measure",
         "PruneStep": "fp.schedule", "Schedule": "fp.schedule", "Range": "fp.validation",
         "OneOf": "fp.validation", "ScoreContext": "fp.scoring",
         # the user-facing calls, each defined once where it is implemented
         "score": "fp.scoring.api", "prune": "fp.pruning.api", "load": "fp.pruning.serialize",
         "save": "fp.pruning.serialize", "build_model": "fp.pruning.arch",
         "run_experiment": "fp.engine.experiment"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'fp' has no attribute {name!r}")


__version__ = _metadata.version("flowprune")  # pyproject.toml holds the version


def operative_config() -> str:
    """The operative gin config so far: every binding the configurables read, plugins' too."""
    from fp.config import operative_text

    return operative_text()


def parse_experiment(files: Sequence[str | os.PathLike], bindings: Sequence[str] = (),
                     manager: Manager | None = None) -> Settings:
    """The validated settings ``fp run FILES --bind BINDINGS`` would run with: ``files`` then
    ``bindings`` parsed into a fresh gin config (it replaces the current one), checked as
    ``fp run`` checks them, with ``manager``'s plugins (None: a fresh ``make_manager()``). Nothing
    is built or run."""
    from fp.config import parse
    from fp.manager import make_manager

    return parse(files, bindings, manager or make_manager())


__all__ = ["Dataset", "FpError", "Loader", "Measure", "OneOf", "PruneStep", "Range", "Schedule",
           "ScoreContext", "build_model", "hookimpl", "hookspec", "load", "make_manager",
           "operative_config", "parse_experiment", "prune", "run_experiment", "save", "score"]
