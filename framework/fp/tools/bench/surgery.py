"""Surgery cost: ``fp.pruning.prune_filters`` removing half of a model's filters (dependency
tracing, global ranking, physical removal) against one forward+backward over a training batch."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fp.tools.bench.scoring_cost import forward_backward
from fp.timing import Task, measure_ratio
from fp.tools.bench.rows import make_row
from fp.pruning import dense_stats, prune_filters
from fp.nn import prunable_weights
from fp.scoring import DEFAULT_TEMPERATURE

#: fraction of the dense model's filters removed by the timed event
PRUNED_FRACTION = 0.5
#: seconds of surgery per forward+backward: a prune event happens a handful of times per run,
#: so a few training steps' worth is negligible; the bound flags a regression, not a hard limit
TARGET = "<= 3"


def random_filter_scores(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Surgery's cost does not depend on which measure ranked the filters."""
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.rand(weight.shape[0], generator=gen).to(weight.device)
            for name, weight in prunable_weights(model).items()}


def prune_surgery_row(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], *,
                      repeats: int, device: torch.device) -> dict[str, Any]:
    """Every repetition prunes a fresh copy of the dense ``model`` (the copy is not timed)."""
    example_inputs = batch[0][:1]
    dense = dense_stats(model, example_inputs)
    scores = random_filter_scores(model)
    surgery = Task(prepare=lambda: copy.deepcopy(model),
                   run=lambda fresh: prune_filters(fresh, scores, PRUNED_FRACTION,
                                                   example_inputs=example_inputs, dense=dense))
    timing = measure_ratio(surgery, lambda: forward_backward(model, [batch], DEFAULT_TEMPERATURE),
                     repeats=repeats, device=device)
    return make_row("prune_surgery", timing, TARGET,
                    baseline=f"one forward+backward over a batch of {len(batch[1])}",
                    notes=f"{PRUNED_FRACTION:.0%} of the filters by global ranking; "
                          f"informational target")
