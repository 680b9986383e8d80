"""The filter-wise Hessian-gradient product Σ_{i∈p} θ_i (Hg)_i, all a GraSP-style filter score
needs, for each filter p of each scored weight (``hvp`` gives Hg whole).

Double backward differentiates with respect to per-filter scales of the convolutions it runs
itself (``conv_autograd.Convolution``), which drops the weight-gradient convolutions of that
pass; a BatchNorm folded into a scaled convolution is corrected for afterwards.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fp.nn import eval_mode, filter_sums
from fp.scoring.hvp import choose_method, mean_hess_grad, second_order_sums
from fp.scoring.layers.fold import Folds
from fp.scoring.layers.double_backward import replaceable
from fp.scoring.gradients import (Batch, as_on_rank_zero, sample_count, total_samples,
                                   trainable, weighted_mean_)


def mean_filter_hess_grad(model: nn.Module, batches: list[Batch], temperature: float,
                          weights: dict[str, Tensor], *, method: str, info: dict,
                          memory: float | None = None,
                          first_order: tuple[dict, dict] | None = None
                          ) -> tuple[dict, dict, dict]:
    """(g, E[g²], {weight name: Σ_{i∈p} θ_i (Hg)_i for each filter p}) for the trainable
    ``weights``. Double backward differentiates with respect to per-filter scales of the
    convolutions it runs itself (and the weight of any other layer); forward over reverse, when
    chosen, computes Hg whole and sums it."""
    names, params = trainable(model)
    trained = {n: w for n, w in weights.items() if n in set(names)}
    if not names:
        return {}, {}, {}
    with eval_mode(model), torch.enable_grad():
        budget, chosen = choose_method(model, batches, temperature, names, params, method,
                                       info, memory, first_order)
        if chosen != "double_backward":
            grad, grad_sq, hess_grad = mean_hess_grad(model, batches, temperature,
                                                      method=chosen, info=info, memory=memory,
                                                      first_order=first_order)
            return grad, grad_sq, {n: filter_sums(w.detach() * hess_grad[n])
                                   for n, w in trained.items()}
        info["hvp_method"] = "double_backward"
        scales = _filter_scales(model, trained)
        targets = [scales.get(n, w) for n, w in trained.items()]
        # every rank folds as rank 0's first batch decides: the correction is for the mean
        folds = Folds(model, as_on_rank_zero(sample_count(batches[0])))
        grad, grad_sq, sums = second_order_sums(
            model, batches, temperature, names, params, budget, info, first_order=first_order,
            targets=targets, scales={model.get_submodule(n.rpartition(".")[0]): s
                                     for n, s in scales.items()}, folds=folds)
        dots = [d if n in scales else filter_sums(trained[n].detach() * d)
                for n, d in zip(trained, sums)]
        means = dict(zip(trained, weighted_mean_(dots, total_samples(batches))))
        _correct_for_folds(model, means, grad, folds.folded())
    return grad, grad_sq, means


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
