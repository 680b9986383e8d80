"""The user-facing calls: ``fp.prune``, ``fp.save``, ``fp.load`` (the README's "In Python")."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from fp.errors import ConfigError, DataError
from fp.measure import Measure
from fp.pruning.arch import build_model
from fp.pruning.filters import prune_filters
from fp.pruning.masks import apply_masks, weight_masks
from fp.pruning.select import check_target
from fp.pruning.serialize import load, save
from fp.pruning.stats import dense_stats

GRANULARITIES = ("filter", "weight")


def prune(model: nn.Module, measure: str | Measure, batches: Iterable, amount: float, *,
          granularity: str = "filter", example_inputs: torch.Tensor | None = None) -> nn.Module:
    """Score ``model`` with ``measure`` on ``batches`` and remove the fraction ``amount`` of its
    filters (or, with ``granularity="weight"``, mask that fraction of its weights), ranked
    globally across layers. Returns the model, pruned in place: physically smaller for filters,
    with ``model.fp_masks`` (True = kept) for weights. ``example_inputs`` (for tracing) default
    to the first example of the first batch. The output layer is never pruned."""
    check_target(amount)
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is not one of 'filter', 'weight'.")
    batches = list(batches)
    if example_inputs is None:
        if not batches:
            raise DataError("fp.prune needs at least one batch (or example_inputs) to trace "
                            "the model.")
        example_inputs = batches[0][0][:1]
    from fp.scoring import score

    scores = score(model, measure, batches, granularity=granularity, temperature=None)
    if granularity == "weight":
        model.fp_masks = weight_masks(scores, amount, current=getattr(model, "fp_masks", None))
        apply_masks(model, model.fp_masks)
        return model
    prune_filters(model, scores, amount, example_inputs=example_inputs,
                  dense=dense_stats(model, example_inputs))
    return model


__all__ = ["build_model", "load", "prune", "save"]
