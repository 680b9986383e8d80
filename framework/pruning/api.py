"""The user-facing calls: ``fp.prune``, ``fp.save``, ``fp.load`` (the README's "In Python")."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from fp.errors import DataError
from fp.measure import Measure
from fp.nn import FILTER, WEIGHT, check_granularity
from fp.pruning.arch import build_model
from fp.pruning.filters import prune_filters
from fp.pruning.masks import apply_masks, weight_masks
from fp.pruning.select import DEFAULT_MAX_FRACTION, check_fraction, check_target
from fp.pruning.serialize import load, save
from fp.pruning.stats import dense_stats


def prune(model: nn.Module, measure: str | Measure, batches: Iterable, amount: float, *,
          granularity: str = FILTER, example_inputs: torch.Tensor | None = None,
          target_type: str = "filters", max_fraction: float = DEFAULT_MAX_FRACTION,
          protected: Sequence[str] = (), temperature: float | None = None) -> nn.Module:
    """Score ``model`` with ``measure`` on ``batches`` and remove the fraction ``amount`` of its
    filters (or of its parameters or FLOPs, with ``target_type``), or, with
    ``granularity="weight"``, mask that fraction of its weights, ranked globally across layers.
    The options are those of a run's ``prune.*`` settings and take the same code path: no layer
    loses more than ``max_fraction`` of its width, ``protected`` module-name prefixes and the
    output layer are never pruned, and ``temperature`` None means the measure's own.

    Returns the model, pruned in place: physically smaller for filters, with ``model.fp_masks``
    (True = kept) for weights. ``example_inputs`` (for tracing) default to the first example of
    the first batch."""
    check_target(amount, target_type)
    check_fraction(max_fraction)
    check_granularity(granularity)
    batches = list(batches)
    if example_inputs is None:
        if not batches:
            raise DataError("fp.prune needs at least one batch (or example_inputs) to trace "
                            "the model.")
        example_inputs = batches[0][0][:1]
    from fp.scoring import score

    scores = score(model, measure, batches, granularity=granularity, temperature=temperature)
    if granularity == WEIGHT:
        model.fp_masks = weight_masks(scores, amount, protected=tuple(protected),
                                      current=getattr(model, "fp_masks", None),
                                      max_fraction=max_fraction)
        apply_masks(model, model.fp_masks)
        return model
    prune_filters(model, scores, amount, example_inputs=example_inputs,
                  dense=dense_stats(model, example_inputs), target_type=target_type,
                  max_fraction=max_fraction, protected=tuple(protected))
    return model


__all__ = ["build_model", "load", "prune", "save"]
