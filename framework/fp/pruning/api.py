"""The user-facing calls: ``fp.prune``, ``fp.save``, ``fp.load`` (the README's "In Python")."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from fp.errors import DataError
from fp.measure import Measure
from fp.nn import FILTER
from fp.pruning.arch import build_model
from fp.pruning.event import PruneOptions, prune_event
from fp.pruning.latency.target import DEFAULT_PROBES, measured_latency
from fp.pruning.select import DEFAULT_MAX_FRACTION
from fp.pruning.serialize import load, save


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
    The options are those of a run's ``prune.*`` settings and take the same code path (one
    ``fp.pruning.prune_event`` with these ``PruneOptions``, as a run's prune events): no layer
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
    options = PruneOptions(granularity=granularity, target_type=target_type,
                           max_fraction=max_fraction, protected=tuple(protected),
                           round_to=round_to, residual=residual, temperature=temperature,
                           latency_probes=latency_probes)
    options.check(amount)
    batches = list(batches)
    if example_inputs is None:
        if not batches:
            raise DataError("fp.prune needs at least one batch (or example_inputs) to trace "
                            "the model.")
        example_inputs = batches[0][0][:1]
    if target_type == "latency" and latency_fn is None:
        latency_fn = measured_latency(example_inputs[:1], latency_batch or 1)
    _, record = prune_event(model, measure, batches, amount, options,
                            example_inputs=example_inputs, latency_fn=latency_fn)
    if record.latency is not None:
        model.fp_latency = {**record.latency.summary(), "probes": record.latency.records()}
    return model


__all__ = ["build_model", "load", "prune", "save"]
