"""The user-facing calls: ``fp.prune``, ``fp.save``, ``fp.load`` (the README's "In Python")."""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from fp.attention import expose_heads
from fp.errors import ConfigError, DataError
from fp.measure import Measure
from fp.nn import FILTER, WEIGHT, check_granularity
from fp.pruning.arch import build_model
from fp.pruning.filters import prune_filters
from fp.pruning.latency.target import DEFAULT_PROBES, measured_latency, prune_to_latency
from fp.pruning.masks import apply_masks, weight_masks
from fp.pruning.residual import check_residual
from fp.pruning.select import DEFAULT_MAX_FRACTION, check_fraction, check_target
from fp.pruning.serialize import load, save
from fp.pruning.stats import dense_stats


def prune(model: nn.Module, measure: str | Measure, batches: Iterable, amount: float, *,
          granularity: str = FILTER, example_inputs: torch.Tensor | None = None,
          target_type: str = "filters", max_fraction: float = DEFAULT_MAX_FRACTION,
          protected: Sequence[str] = (), temperature: float | None = None, round_to: int = 1,
          latency_fn: Callable[[nn.Module], tuple[float, float]] | None = None,
          latency_batch: int | None = None, latency_probes: int = DEFAULT_PROBES,
          residual: str = "tied") -> nn.Module:
    """Score ``model`` with ``measure`` on ``batches`` and remove the fraction ``amount`` of its
    filters (or of its parameters, FLOPs or latency, with ``target_type``), or, with
    ``granularity="weight"``, mask that fraction of its weights, ranked globally across layers.
    The options are those of a run's ``prune.*`` settings and take the same code path: no layer
    loses more than ``max_fraction`` of its width, ``protected`` module-name prefixes and the
    output layer are never pruned, every pruned layer keeps a multiple of ``round_to`` filters,
    and ``temperature`` None means the measure's own.

    ``target_type="latency"`` times pruned copies (at most ``latency_probes`` of them) with
    ``latency_fn(model) -> (seconds, noise)``; by default a forward pass of ``latency_batch``
    (None: 1) copies of one example on the model's device. ``model.fp_latency`` then holds the
    dense and final latencies and every probe (``docs/pruning.md``).

    ``residual="masked"`` prunes residual models as the seed paper's code does: channels that
    feed a residual add are masked per filter (``model.fp_filter_masks``), not removed, and the
    stem is never pruned (``fp.pruning.residual``); ``"tied"`` removes them across the add.

    An ``nn.MultiheadAttention`` in ``model`` is first replaced, in place, by an
    ``fp.attention.HeadAttention`` holding the same weights (the same function), whose attention
    heads are scored and pruned as whole slots (``docs/transformers.md``).

    Returns the model, pruned in place: physically smaller for filters, with ``model.fp_masks``
    (True = kept) for weights. ``example_inputs`` (for tracing) default to the first example of
    the first batch."""
    check_target(amount, target_type)
    check_fraction(max_fraction)
    check_granularity(granularity)
    check_residual(residual)
    if residual == "masked" and (granularity == WEIGHT or target_type == "latency"):
        raise ConfigError("residual='masked' needs granularity='filter' and a filters, params or "
                          "flops target: masks neither act on single weights nor save latency.")
    if target_type == "latency" and granularity == WEIGHT:
        raise ConfigError("a latency target needs granularity='filter': masked weights do not "
                          "make the model faster.")
    batches = list(batches)
    if example_inputs is None:
        if not batches:
            raise DataError("fp.prune needs at least one batch (or example_inputs) to trace "
                            "the model.")
        example_inputs = batches[0][0][:1]
    from fp.scoring import score

    expose_heads(model)  # nn.MultiheadAttention -> HeadAttention: same function, prunable heads
    scores = score(model, measure, batches, granularity=granularity, temperature=temperature)
    if granularity == WEIGHT:
        model.fp_masks = weight_masks(scores, amount, protected=tuple(protected),
                                      current=getattr(model, "fp_masks", None),
                                      max_fraction=max_fraction)
        apply_masks(model, model.fp_masks)
        return model
    dense = dense_stats(model, example_inputs)
    options = {"example_inputs": example_inputs, "dense": dense, "max_fraction": max_fraction,
               "protected": tuple(protected), "round_to": round_to}
    if target_type != "latency":
        prune_filters(model, scores, amount, target_type=target_type, residual=residual,
                      **options)
        return model
    if latency_fn is None:
        latency_fn = measured_latency(example_inputs[:1], latency_batch or 1)
    done = prune_to_latency(model, scores, amount, latency_fn=latency_fn,
                            dense_model=copy.deepcopy(model), probes=latency_probes, **options)
    model.fp_latency = {**done.summary(), "probes": done.records()}
    return model


__all__ = ["build_model", "load", "prune", "save"]
