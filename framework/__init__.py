"""flowprune: pruning research on the gradient-flow framework (Lubana & Dick, ICLR 2021).

Public API (see DESIGN.md): ``fp.score``, ``fp.prune``, ``fp.load``, the plugin base classes
``fp.Measure``, ``fp.Dataset``, ``fp.Schedule``, and the ``fp.hookimpl`` marker.
"""
from __future__ import annotations

from fp.dataset import Dataset, Loader
from fp.errors import FpError
from fp.hookspecs import hookimpl, hookspec
from fp.manager import make_manager
from fp.measure import Measure
from fp.schedule import PruneStep, Schedule

__version__ = "0.1.0"


def score(model, measure, batches, *, granularity="filter", temperature=None):
    """Per-filter (or per-weight) importance scores of ``model``'s conv/linear weights, keyed by
    parameter name; higher = more important. ``measure`` is a registered name or a Measure."""
    from fp.scoring import score as _score

    return _score(model, measure, batches, granularity=granularity, temperature=temperature)


def prune(model, measure, batches, amount, *, granularity="filter", example_inputs=None):
    """Remove the fraction ``amount`` of filters ranked globally by ``measure``; returns a
    physically smaller model (filter granularity) or the masked model (weight granularity)."""
    from fp.pruning.api import prune as _prune

    return _prune(model, measure, batches, amount, granularity=granularity,
                  example_inputs=example_inputs)


def load(path):
    """A model saved by fp (``model.pt`` or ``fp.save``), rebuilt without its original config and
    without executing code from the file."""
    from fp.pruning.api import load as _load

    return _load(path)


def save(model, path):
    """Save a (pruned) model built by fp so that ``fp.load`` rebuilds it anywhere."""
    from fp.pruning.api import save as _save

    return _save(model, path)


__all__ = ["Dataset", "FpError", "Loader", "Measure", "PruneStep", "Schedule", "hookimpl",
           "hookspec", "load", "make_manager", "prune", "save", "score"]
