"""flowprune: pruning research on the gradient-flow framework (Lubana & Dick, ICLR 2021).

Public API: ``fp.score``, ``fp.prune``, ``fp.load``, the plugin base classes
``fp.Measure``, ``fp.Dataset``, ``fp.Schedule``, and the ``fp.hookimpl`` marker.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fp.errors import FpError

if TYPE_CHECKING:  # pragma: no cover
    from fp.dataset import Dataset, Loader
    from fp.hookspecs import hookimpl, hookspec
    from fp.manager import make_manager
    from fp.measure import Measure
    from fp.schedule import PruneStep, Schedule
    from fp.validation import OneOf, Range

#: public name -> the module defining it, imported on first use so that ``import fp`` (and so
#: ``fp --help``) does not import torch
_LAZY = {"Dataset": "fp.dataset", "Loader": "fp.dataset", "hookimpl": "fp.hookspecs",
         "hookspec": "fp.hookspecs", "make_manager": "fp.manager", "Measure": "fp.measure",
         "PruneStep": "fp.schedule", "Schedule": "fp.schedule", "Range": "fp.validation",
         "OneOf": "fp.validation"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'fp' has no attribute {name!r}")


__version__ = "0.1.0"


def score(model, measure, batches, *, granularity="filter", temperature=None):
    """Per-filter (or per-weight) importance scores of ``model``'s conv/linear weights, keyed by
    parameter name; higher = more important. ``measure`` is a registered name or a Measure."""
    from fp.scoring import score as _score

    return _score(model, measure, batches, granularity=granularity, temperature=temperature)


def prune(model, measure, batches, amount, *, granularity="filter", example_inputs=None,
          target_type="filters", max_fraction=0.95, protected=(), temperature=None):
    """Remove the fraction ``amount`` of filters (or parameters or FLOPs, ``target_type``)
    ranked globally by ``measure``; returns a physically smaller model (filter granularity) or
    the masked model (weight granularity). The options are the run's ``prune.*`` settings."""
    from fp.pruning.api import prune as _prune

    return _prune(model, measure, batches, amount, granularity=granularity,
                  example_inputs=example_inputs, target_type=target_type,
                  max_fraction=max_fraction, protected=protected, temperature=temperature)


def load(path):
    """A model saved by fp (``model.pt`` or ``fp.save``), rebuilt without its original config and
    without executing code from the file."""
    from fp.pruning.api import load as _load

    return _load(path)


def save(model, path):
    """Save a (pruned) model built by fp so that ``fp.load`` rebuilds it anywhere."""
    from fp.pruning.api import save as _save

    return _save(model, path)


__all__ = ["Dataset", "FpError", "Loader", "Measure", "OneOf", "PruneStep", "Range", "Schedule", "hookimpl",
           "hookspec", "load", "make_manager", "prune", "save", "score"]
