"""One filter-granularity prune event: filter scores in, a physically smaller model out.

``target`` is cumulative: the fraction of the DENSE model's filters (or parameters, or FLOPs)
removed once the event is done, so a schedule of events 0.3, 0.5, 0.7 ends at 0.7.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from fp.errors import ConfigError, PruningError
from fp.pruning.costs import slot_costs
from fp.pruning.filter_masks import filter_masks
from fp.pruning.groups import channel_groups, dependency_graph
from fp.pruning.residual import (Residual, apply_selection, check_residual, mask_costs,
                                 ranked_filters, split_residual)
from fp.pruning.select import (DEFAULT_MAX_FRACTION, check_fraction, check_round_to, check_target,
                               select_ranked)
from fp.pruning.stats import (count_flops, count_params, filter_widths, kept_widths, layer_flops,
                              prunable_filters)
from fp.pruning.surgery import PruneResult, Snapshot, prune_and_run

#: parameter and FLOP savings are estimated, so the event re-measures and tops up at most this often
MAX_ROUNDS = 8
#: how far short of its target (a fraction of the dense model) an event may end when the
#: per-layer cap leaves nothing more to remove, before that is an error
TOLERANCE = 0.01

#: target type -> how much of it ``model`` has now
AMOUNT: dict[str, Callable[[nn.Module, Tensor], float]] = {
    "filters": lambda model, inputs: prunable_filters(model),
    "params": lambda model, inputs: count_params(model),
    "flops": count_flops,
}


def prune_filters(model: nn.Module, filter_scores: dict[str, Tensor], target: float, *,
                  example_inputs: Tensor, dense: dict[str, Any], target_type: str = "filters",
                  max_fraction: float = DEFAULT_MAX_FRACTION, protected: Iterable[str] = (),
                  carry: dict[str, Tensor] | None = None, round_to: int = 1,
                  residual: str = "tied") -> PruneResult:
    """Remove the lowest-scored channels (global ranking) until ``target`` of ``dense`` is gone;
    every group that loses channels keeps a multiple of ``round_to`` (see ``select``).
    ``residual="masked"`` masks the filters that feed residual adds instead of removing their
    channels (``residual``); ``result.masked`` names them.

    ``dense`` holds the dense model's ``params``, ``flops``, ``filters`` and, ideally, its
    ``widths`` (weight name -> out-channels; see ``stats.dense_stats``) that anchor the per-layer
    cap. Without them the widths the model has at its first prune event count as dense (kept in
    ``model.fp_dense_widths``).

    The model is traced once (one dependency graph for every round), and every surgery is
    followed by one forward pass of one example (``surgery.prune_and_run``). Any failure, that
    check's included, puts the model back as it was before the event (``surgery.Snapshot``)
    before the error goes up: a refused event leaves a model that works as it did.
    """
    dense_total = checked_total(dense, target, target_type, max_fraction, round_to)
    check_residual(residual)
    if residual == "tied" and filter_masks(model):
        raise ConfigError("this model has masked filters (pruned with residual='masked'); prune "
                          "it again with residual='masked'.")
    dense_widths = dense_widths_of(model, dense)
    snapshot = Snapshot(model)  # references, no copy: a failed event puts the model back
    try:
        result = prune_rounds(model, filter_scores, target, dense_total, dense_widths, snapshot,
                              example_inputs=example_inputs, target_type=target_type,
                              max_fraction=max_fraction, protected=tuple(protected),
                              carry=carry, round_to=round_to, residual=residual)
    except BaseException:
        snapshot.restore()
        raise
    result.widths_after = kept_widths(model)
    result.removed = {name: idx.sort().values for name, idx in result.removed.items()}
    result.masked = {name: idx.sort().values for name, idx in result.masked.items()}
    return result


def prune_rounds(model: nn.Module, filter_scores: dict[str, Tensor], target: float,
                 dense_total: float, dense_widths: dict[str, int], snapshot: Snapshot, *,
                 example_inputs: Tensor, target_type: str, max_fraction: float,
                 protected: tuple[str, ...], carry: dict[str, Tensor] | None, round_to: int,
                 residual: str) -> PruneResult:
    """``prune_filters``' rounds: rank, select, mask and remove, until the target is met. The
    model is traced once, on the first round that has something to remove."""
    result = PruneResult(widths_before=kept_widths(model), carried=dict(carry or {}))
    alive = {name: torch.arange(width) for name, width in filter_widths(model).items()}
    scores, graph = dict(filter_scores), None
    for _ in range(MAX_ROUNDS):
        need = still_needed(model, example_inputs, target, target_type, dense_total)
        if need <= 0:
            break
        graph = dependency_graph(model, example_inputs) if graph is None else graph
        groups = channel_groups(model, example_inputs, protected=protected, graph=graph)
        split = (split_residual(model, groups) if residual == "masked"
                 else Residual(groups=groups))
        costs = slot_costs(split.groups, target_type, model, example_inputs)
        flops = layer_flops(model, example_inputs) if target_type == "flops" else None
        singles = ranked_filters(model, split.masked, scores,
                                 mask_costs(split.masked, target_type, model, flops),
                                 dense_widths, max_fraction)
        selection, to_mask, saving = select_ranked(split.groups, scores, need, costs, singles,
                                                   dense_widths=dense_widths,
                                                   max_fraction=max_fraction, round_to=round_to)
        if saving < need - TOLERANCE * dense_total:
            raise unreachable(target, target_type, max_fraction,
                              f"about {max(target - (need - saving) / dense_total, 0.0):.3f}",
                              round_to)
        if not selection and not to_mask:
            break
        for layer in split.masked:
            if to_mask.get(layer.name):
                snapshot.keep_rows(model, layer.params, torch.tensor(to_mask[layer.name]))
        for name, rows in apply_selection(model, split, to_mask).items():
            result.masked[name] = torch.cat([result.masked.get(name, rows[:0]), rows])
        if selection:
            step = prune_and_run(model, split.groups, selection, example_inputs,
                                 carry=result.carried)
            result.carried = step.carried
            record_removed(result.removed, alive, step.removed)
            scores = without_removed(scores, step.removed)
        if target_type == "filters":
            break  # filter savings are exact: one round hits the target
    return result


def checked_total(dense: dict[str, Any], target: float, target_type: str,
                  max_fraction: float, round_to: int = 1) -> float:
    """The dense model's amount of ``target_type``, once the arguments are known to be sound."""
    check_target(target, target_type)
    check_fraction(max_fraction)
    check_round_to(round_to)
    if target_type == "latency":
        raise ConfigError("a latency target is measured, not estimated: prune with "
                          "fp.pruning.prune_to_latency(..., latency_fn=...) or fp.prune.")
    if target_type not in dense:
        raise ConfigError(f"the dense model's statistics lack {target_type!r}; pass "
                          f"dense=fp.pruning.dense_stats(model, example_inputs).")
    return float(dense[target_type])


def still_needed(model: nn.Module, example_inputs: Tensor, target: float, target_type: str,
                 dense_total: float) -> float:
    """How much more must go: the target amount minus what earlier events removed."""
    removed = dense_total - AMOUNT[target_type](model, example_inputs)
    goal = target * dense_total
    if target_type == "filters":  # whole filters: round(target * dense_filters)
        goal = math.floor(goal + 0.5)
    return goal - removed


def dense_widths_of(model: nn.Module, dense: dict[str, Any]) -> dict[str, int]:
    widths = dense.get("widths") or getattr(model, "fp_dense_widths", None)
    if widths is None:
        widths = filter_widths(model)
        model.fp_dense_widths = widths
    return widths


def unreachable(target: float, target_type: str, max_fraction: float, reachable: str,
                round_to: int = 1) -> PruningError:
    rounding = f", round_to={round_to}" if round_to > 1 else ""
    return PruningError(f"a target of {target:g} of the dense model's {target_type} cannot be "
                        f"reached: the per-layer cap max_fraction={max_fraction:g}{rounding} and "
                        f"the protected layers allow {reachable}.")


def record_removed(removed: dict[str, Tensor], alive: dict[str, Tensor],
                   step: dict[str, Tensor]) -> None:
    """Translate a round's indices (current widths) into the event's (widths before it)."""
    for name, indices in step.items():
        original = alive[name][indices]
        removed[name] = torch.cat([removed[name], original]) if name in removed else original
        alive[name] = alive[name][kept(len(alive[name]), indices)]


def without_removed(scores: dict[str, Tensor], step: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: s[kept(len(s), step[name]).to(s.device)] if name in step else s
            for name, s in scores.items()}


def kept(width: int, removed: Tensor) -> Tensor:
    mask = torch.ones(width, dtype=torch.bool)
    mask[removed] = False
    return mask
