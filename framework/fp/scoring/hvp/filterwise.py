"""The filter-wise Hessian-gradient product Σ_{i∈p} θ_i (Hg)_i, all a GraSP-style filter score
needs, for each filter p of each scored weight (``fp.scoring.hvp.mean_hess_grad`` gives Hg
whole).

Double backward differentiates with respect to per-filter scales of the convolutions it runs
itself (``fp.scoring.layers.conv.Convolution``), which drops the weight-gradient convolutions of
that pass; a BatchNorm folded into a scaled convolution is corrected for afterwards.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fp.nn import eval_mode, filter_sums
from fp.scoring.gradients import ScoringLoss, total_samples, weighted_mean_
from fp.scoring.hvp import HvpInfo, HvpResult, Stats, choice_info, mean_hess_grad, second_order_sums
from fp.scoring.hvp.choice import choose_method
from fp.scoring.layers.double_backward import replaceable
from fp.scoring.layers.fold import Folds


def mean_filter_hess_grad(loss: ScoringLoss, weights: dict[str, Tensor], *, method: str,
                          memory: float | None = None,
                          first_order: tuple[Stats, Stats] | None = None) -> HvpResult:
    """(g, E[g²], {weight name: Σ_{i∈p} θ_i (Hg)_i for each filter p}) for the trainable
    ``weights``, and how it was computed (``mean_hess_grad``'s arguments). Double backward
    differentiates with respect to per-filter scales of the convolutions it runs itself (and
    the weight of any other layer); forward over reverse, when chosen, computes Hg whole and
    sums it."""
    model, names = loss.model, set(loss.names)
    trained = {n: w for n, w in weights.items() if n in names}
    if not names:
        return HvpResult({}, {}, {}, HvpInfo())
    with eval_mode(model), torch.enable_grad():
        chosen = choose_method(loss, method, memory, first_order)
        info = choice_info(chosen)
        if chosen.method != "double_backward":
            whole = mean_hess_grad(loss, method=chosen.method, memory=memory,
                                   first_order=first_order)
            return HvpResult(whole.grad, whole.grad_sq,
                             {n: filter_sums(w.detach() * whole.found[n])
                              for n, w in trained.items()}, info | whole.info)
        info["hvp_method"] = "double_backward"
        scales = _filter_scales(model, trained)
        targets = [scales.get(n, w) for n, w in trained.items()]
        folds = Folds(model, loss.shortcuts)  # the correction below is for exactly these folds
        found = second_order_sums(
            loss, chosen.budget, first_order=first_order, targets=targets,
            scales={model.get_submodule(n.rpartition(".")[0]): s for n, s in scales.items()},
            folds=folds)
        dots = [d if n in scales else filter_sums(trained[n].detach() * d)
                for n, d in zip(trained, found.sums)]
        means = dict(zip(trained, weighted_mean_(dots, total_samples(loss.batches))))
        _correct_for_folds(model, means, found.grad, folds.folded())
    return HvpResult(found.grad, found.grad_sq, means, info | found.info)


def _correct_for_folds(model: nn.Module, dots: dict[str, Tensor], grad: dict[str, Tensor],
                       folded: dict[str, str]) -> None:
    """Add back what folding BatchNorm into a scaled convolution hides. With W' = W·γ/σ, the
    scales reach W through W' but ∂W'/∂γ = W/σ, which moves with W, lies outside their graph:
    its share of Σ_{i∈p} θ_i (Hg)_i is g_γ·(∂L/∂γ through W'). The folded bias c = β + (b − μ)γ/σ
    (b the convolution's own bias) has ∂L/∂c = ∂L/∂β, so that share is g_γ·(g_γ + (μ − b)/σ·g_β),
    linear in the batch gradients and so exact for their sample-weighted mean."""
    for conv, bn_name in folded.items():
        bn, weight = model.get_submodule(bn_name), f"{conv}.weight" if conv else "weight"
        prefix = f"{bn_name}." if bn_name else ""
        if weight not in dots or f"{prefix}weight" not in grad:
            continue  # not a scaled weight, or γ frozen: nothing moves with W
        g_gamma, g_beta = grad[f"{prefix}weight"], grad[f"{prefix}bias"]
        offset = bn.running_mean if model.get_submodule(conv).bias is None else (
            bn.running_mean - model.get_submodule(conv).bias.detach())
        ratio = offset / torch.sqrt(bn.running_var + bn.eps)
        dots[weight] = dots[weight] + g_gamma * (g_gamma + ratio * g_beta)


def _filter_scales(model: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weight name → a vector of ones, one per filter, for each weight of a convolution that
    ``cheap_double_backward`` runs itself."""
    scales = {}
    for name, weight in weights.items():
        owner = model.get_submodule(name.rpartition(".")[0])
        if replaceable(owner) and owner.weight is weight:
            scales[name] = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device,
                                      requires_grad=True)
    return scales
