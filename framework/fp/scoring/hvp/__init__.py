"""Hg = Σ_b n_b ∇(ḡᵀ∇L_b) / Σ_b n_b, ḡ = g detached (a mean over samples, see
``fp.scoring.gradients``): the Hessian-gradient product GraSP-style measures use, and its
filter-wise form Σ_{i∈p} θ_i (Hg)_i, which is all a filter score needs (``filterwise``). Every
path below weighs batch b by n_b.

Two exact ways to get H_b v (``methods``; ``METHODS`` names them):
- double backward: differentiate the first-order graph once more (``layers.double_backward``
  makes its convolutions and BatchNorms cheap to differentiate). While g is not known yet, the
  pass that finds it keeps each batch's first-order graph (as far as ``memory`` allows), so H_b g
  is one more backward pass through it rather than a forward, a backward and the double
  backward. The filter-wise form differentiates with respect to per-filter scales instead of the
  weights (``layers.conv.Convolution``), which drops the weight-gradient convolutions of that
  pass;
- forward over reverse: the directional derivative (jvp) of the gradient function along v.

"auto" uses what ``choice`` timed each to add to the gradient pass, once per process for a model
and its images (``fp.scoring.autotune``), and the result's ``info`` says which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor

from fp.nn import eval_mode
from fp.scoring.gradients import (ScoringLoss, batch_grads, gradient_moments, mean_grad_and_sq,
                                  sample_count, total_samples, weighted_mean_)
from fp.scoring.hvp import choice
from fp.scoring.hvp.choice import MethodChoice, choose_method
from fp.scoring.hvp.methods import (HVP_FUNCTIONS, METHODS, SavedBytes, Scales, differentiate,
                                    graph_grads)
from fp.scoring.layers.fold import Folds

Stats = dict[str, Tensor]


class HvpInfo(TypedDict, total=False):
    """How Hg was computed, under the names ``ScoreContext.info`` and a prune event's record
    give it."""

    hvp_method: str                     # the method used
    hvp_kept: str                       # "k/n": batches whose first-order graph was kept
    hvp_graph_mb: float                 # one batch's kept graph, where graphs were kept
    hvp_probe: str                      # "auto": timed "this call, batch 1" or "earlier ..."
    hvp_seconds: dict[str, float]       # "auto": each method's added seconds per batch
    hvp_fallback_reason: str            # "auto": why forward over reverse is unavailable


@dataclass
class HvpResult:
    """What one Hessian-gradient computation finds: g and E[g²] (each a mean over samples), the
    statistic asked for (Hg, or its filter-wise sums), and how it was computed."""

    grad: Stats
    grad_sq: Stats
    found: Stats
    info: HvpInfo


@dataclass
class SecondOrderSums:
    """g, E[g²] and Σ_b n_b ∂/∂targets ⟨ḡ, ∇L_b⟩ (not yet divided by N), and how many
    first-order graphs were kept (``hvp_kept``, ``hvp_graph_mb``)."""

    grad: Stats
    grad_sq: Stats
    sums: list[Tensor]
    info: HvpInfo


def choice_info(chosen: MethodChoice) -> HvpInfo:
    """What decided ``chosen``, where "auto" did."""
    info = HvpInfo()
    if chosen.timed:
        info["hvp_probe"] = chosen.timed
        info["hvp_seconds"] = chosen.seconds
    if chosen.fallback_reason:
        info["hvp_fallback_reason"] = chosen.fallback_reason
    return info


def mean_hess_grad(loss: ScoringLoss, *, method: str, memory: float | None = None,
                   first_order: tuple[Stats, Stats] | None = None) -> HvpResult:
    """(g, E[g²], Hg) over all trainable parameters, each a mean over the samples of every batch
    (and rank). ``first_order`` is (g, E[g²]) if already known (then no graph can be kept).
    ``method`` is one of METHODS or "auto"; ``memory`` caps the bytes of kept graphs (None:
    ``choice.MEMORY_SHARE`` of the free memory)."""
    if not loss.names:
        return HvpResult({}, {}, {}, HvpInfo())
    with eval_mode(loss.model), torch.enable_grad():
        chosen = choose_method(loss, method, memory, first_order)
        info = choice_info(chosen) | HvpInfo(hvp_method=chosen.method)
        if chosen.method == "double_backward":
            found = second_order_sums(loss, chosen.budget, first_order=first_order)
            grad, grad_sq, hv = found.grad, found.grad_sq, found.sums
            info |= found.info
        else:
            grad, grad_sq = first_order or mean_grad_and_sq(
                loss.model, loss.batches, loss.temperature, shortcuts=loss.shortcuts)
            vec = [grad[n].detach() for n in loss.names]
            hv = [torch.zeros_like(p) for p in loss.params]
            for batch in loss.batches:
                for acc, h in zip(hv, HVP_FUNCTIONS[chosen.method](loss, batch, vec)):
                    acc.add_(h, alpha=sample_count(batch))
            info["hvp_kept"] = f"0/{len(loss.batches)}"
    means = weighted_mean_(hv, total_samples(loss.batches))
    return HvpResult(grad, grad_sq, dict(zip(loss.names, means)), info)


def second_order_sums(loss: ScoringLoss, budget: float, *,
                      first_order: tuple[Stats, Stats] | None = None,
                      targets: list[Tensor] | None = None, scales: Scales | None = None,
                      folds: Folds | None = None) -> SecondOrderSums:
    """(g, E[g²], Σ_b n_b ∂/∂targets ⟨ḡ, ∇L_b⟩); targets default to the parameters (giving
    Σ_b n_b H_b g; the caller divides by N after summing over ranks).
    Without ``first_order``, one forward and create_graph backward per batch gives g and E[g²]
    and keeps the graphs that fit ``budget`` bytes; one backward pass through them follows, and
    the batches whose graph did not fit are recomputed. With it, every batch is recomputed.
    Every batch folds the BatchNorms ``folds`` names (those of ``loss.shortcuts`` without it)."""
    targets = list(loss.params) if targets is None else targets
    folds = folds or Folds(loss.model, loss.shortcuts)
    batches = loss.batches
    kept, dropped, info = [], list(range(len(batches))), HvpInfo()
    if first_order is None:
        first_order, kept, dropped, graph_bytes = _first_pass(loss, budget, scales, folds)
        info["hvp_graph_mb"] = round(graph_bytes / 2 ** 20, 1)
    grad, grad_sq = first_order
    vec = [grad[n].detach() for n in loss.names]
    recomputed = set(dropped)
    sizes = [sample_count(b) for i, b in enumerate(batches) if i not in recomputed]
    sums = differentiate(kept, vec, targets, sizes)
    info["hvp_kept"] = f"{len(kept)}/{len(batches)}"
    del kept
    for index in dropped:
        again = graph_grads(loss, batches[index], scales, folds=folds)
        for acc, d in zip(sums, differentiate([again], vec, targets,
                                              [sample_count(batches[index])])):
            acc.add_(d)
    return SecondOrderSums(grad, grad_sq, sums, info)


def _first_pass(loss: ScoringLoss, budget: float, scales: Scales | None, folds: Folds
                ) -> tuple[tuple[Stats, Stats], list, list[int], int]:
    """g, E[g²] (means over the samples of every batch and rank), the kept graphs (of the first
    batches), the dropped batches and the bytes of one batch's graph: ``mean_grad_and_sq``'s
    pass, keeping the graphs that fit ``budget`` (measured on the first batch)."""
    kept, dropped, capacity, graph_bytes = [], [], [len(loss.batches)], [0]

    def grads_of(index: int, x: Tensor, y: Tensor):
        if index >= capacity[0]:
            dropped.append(index)
            return batch_grads(loss.model, x, y, loss.temperature, loss.params)
        saved = SavedBytes(loss.params) if index == 0 else None
        grads = graph_grads(loss, (x, y), scales, saved, folds)
        if saved is not None:
            share = choice.kept_share(saved.bytes, budget, len(loss.batches))
            capacity[0] = round(share * len(loss.batches))
            graph_bytes[0] = saved.bytes
        if index < capacity[0]:
            kept.append(grads)
        else:
            dropped.append(index)
        return grads

    moments = gradient_moments(loss.batches, loss.params, grads_of)
    return moments.means(loss.names), kept, dropped, graph_bytes[0]


__all__ = ["HVP_FUNCTIONS", "METHODS", "HvpInfo", "HvpResult", "SecondOrderSums", "choice_info",
           "mean_hess_grad", "second_order_sums"]
