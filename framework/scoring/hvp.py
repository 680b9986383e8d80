"""Hg = Σ_b n_b ∇(ḡᵀ∇L_b) / Σ_b n_b, ḡ = g detached (a mean over samples, see ``statistics``):
the Hessian-gradient product GraSP-style measures use, and its filter-wise form
Σ_{i∈p} θ_i (Hg)_i, which is all a filter score needs. Every path below weighs batch b by n_b.

Two exact ways to get H_b v:
- double backward: differentiate the first-order graph once more (``second_order`` makes its
  convolutions and BatchNorms cheap to differentiate). While g is not known yet, the pass that
  finds it keeps each batch's first-order graph (as far as ``memory`` allows), so H_b g is one
  more backward pass through it rather than a forward, a backward and the double backward. The
  filter-wise form differentiates with respect to per-filter scales instead of the weights
  (``second_order._Convolution``), which drops the weight-gradient convolutions of that pass;
- forward over reverse: the directional derivative (jvp) of the gradient function along v.

"auto" uses what ``probe`` measured each to add to the gradient pass, once per process for a
model class, device, dtype and batch shape, and says which in ``info``.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from fp.scoring import probe as probing
from fp.scoring.second_order import cheap_double_backward, foldable_pairs, replaceable
from fp.scoring.statistics import (Batch, Moments, as_on_rank_zero, batch_loss, eval_mode,
                                   mean_grad_and_sq, sample_count, total_samples, trainable,
                                   weighted_mean_)

Scales = dict[nn.Module, Tensor]


def graph_grads(model: nn.Module, x: Tensor, y: Tensor, temperature: float,
                params: list[nn.Parameter], scales: Scales | None = None,
                saved: probing.SavedBytes | None = None) -> tuple[Tensor | None, ...]:
    """∇L_b with its graph kept (create_graph), through the cheap-double-backward layers."""
    with cheap_double_backward(model, scales), (saved or contextlib.nullcontext()):
        return torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                   create_graph=True, allow_unused=True)


def differentiate(grad_lists: Sequence[Sequence[Tensor | None]], vec: list[Tensor],
                  targets: Sequence[Tensor], weights: Sequence[float] | None = None
                  ) -> list[Tensor]:
    """∂/∂targets of Σ_b w_b ⟨v, ∇L_b⟩ over first-order graphs built by ``graph_grads`` (w_b = 1
    without ``weights``): one backward pass through all of them (which frees them). With the
    parameters as targets and w_b = n_b this is Σ_b n_b H_b v."""
    outputs, cotangents, scaled = [], [], {}
    for index, grads in enumerate(grad_lists):
        w = 1.0 if weights is None else float(weights[index])
        if w not in scaled:  # one w·v per distinct batch size, not per batch
            scaled[w] = vec if w == 1.0 else [v * w for v in vec]
        for grad, v in zip(grads, scaled[w]):
            if grad is not None and grad.requires_grad:  # else L_b is linear in that parameter
                outputs.append(grad)
                cotangents.append(v)
    if not outputs:
        return [torch.zeros_like(t) for t in targets]
    found = torch.autograd.grad(outputs, list(targets), grad_outputs=cotangents,
                                allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for d, t in zip(found, targets)]


def double_backward(model, x, y, temperature, names, params, vec) -> list[Tensor]:
    """H_b v as ∇(vᵀ∇L_b): reverse mode twice, through the graph of the first gradient."""
    return differentiate([graph_grads(model, x, y, temperature, params)], vec, params)


def forward_over_reverse(model, x, y, temperature, names, params, vec) -> list[Tensor]:
    """H_b v as the directional derivative (jvp) of the gradient function along v. Functional
    because eval-mode BatchNorm reads its running statistics without updating them."""
    def loss_of(weights: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(model, weights, (x,))
        return torch.nn.functional.cross_entropy(logits / temperature, y)

    primals = {n: p.detach() for n, p in zip(names, params)}
    tangents = dict(zip(names, vec))
    with warnings.catch_warnings():  # torch loads its forward-AD formulas via torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
        _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
    return [hv[n] for n in names]


HvpFn = Callable[..., list[Tensor]]
HVP_METHODS: dict[str, HvpFn] = {"double_backward": double_backward,
                                 "forward_over_reverse": forward_over_reverse}
PROBES = probing.PROBES  # the same dict: tests may swap it for an empty one


def probe(model: nn.Module, batch: Batch, temperature: float, names: list[str],
          params: list[nn.Parameter]) -> probing.Probe:
    """Time the gradient pass plain and with its graph, the double backward through that graph
    and forward over reverse, on one batch with its own gradient as v (timings do not depend on
    v). Forward-mode AD lacks formulas for some ops: then only double backward is available."""
    x, y = batch
    device = x.device
    start = probing.clock(device)
    vec = list(torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                   allow_unused=True))
    plain = probing.clock(device) - start
    vec = [torch.zeros_like(p) if v is None else v for v, p in zip(vec, params)]
    saved = probing.SavedBytes(params)
    start = probing.clock(device)
    grads = graph_grads(model, x, y, temperature, params, saved=saved)
    graph = probing.clock(device) - start
    differentiate([grads], vec, params)
    double = probing.clock(device) - start - graph
    del grads
    jvp, error = None, ""
    try:
        jvp_fn = HVP_METHODS["forward_over_reverse"]
        if ("forward_over_reverse", device.type) not in probing.WARM:
            jvp_fn(model, x, y, temperature, names, params, vec)
            probing.WARM.add(("forward_over_reverse", device.type))
        start = probing.clock(device)
        jvp_fn(model, x, y, temperature, names, params, vec)
        jvp = probing.clock(device) - start
    except Exception as exc:  # noqa: BLE001 - any unsupported op means: use the other method
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return probing.Probe(plain, graph, double, jvp, error, graph_bytes=saved.bytes)


def mean_hess_grad(model: nn.Module, batches: list[Batch], temperature: float, *, method: str,
                   info: dict, memory: float | None = None,
                   first_order: tuple[dict, dict] | None = None) -> tuple[dict, dict, dict]:
    """(g, E[g²], Hg) over all trainable parameters at ``temperature``, each a mean over the
    samples of every batch (and rank). ``first_order`` is (g, E[g²]) if already known (then no
    graph can be kept). ``method`` is a key of HVP_METHODS or "auto"; ``memory`` caps the bytes
    of kept graphs (None: MEMORY_SHARE of the free memory). ``info`` receives hvp_method,
    hvp_kept (graphs kept of batches) and, for "auto", hvp_seconds (the probe's added cost per
    batch of each method) and hvp_probe."""
    names, params = trainable(model)
    if not names:
        return {}, {}, {}
    with eval_mode(model), torch.enable_grad():
        budget, chosen = _choose(model, batches, temperature, names, params, method, info,
                                 memory, first_order)
        info["hvp_method"] = chosen
        if chosen == "double_backward":
            grad, grad_sq, hv = second_order_sums(model, batches, temperature, names, params,
                                                  budget, info, first_order=first_order)
        else:
            grad, grad_sq = first_order or mean_grad_and_sq(model, batches, temperature)
            vec = [grad[n].detach() for n in names]
            hv = [torch.zeros_like(p) for p in params]
            for x, y in batches:
                n = sample_count((x, y))
                for acc, h in zip(hv, HVP_METHODS[chosen](model, x, y, temperature, names,
                                                          params, vec)):
                    acc.add_(h, alpha=n)
            info["hvp_kept"] = f"0/{len(batches)}"
    means = weighted_mean_(hv, total_samples(batches))
    return grad, grad_sq, dict(zip(names, means))



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
        budget, chosen = _choose(model, batches, temperature, names, params, method, info,
                                 memory, first_order)
        if chosen != "double_backward":
            grad, grad_sq, hess_grad = mean_hess_grad(model, batches, temperature,
                                                      method=chosen, info=info, memory=memory,
                                                      first_order=first_order)
            return grad, grad_sq, {n: filter_sums(w.detach() * hess_grad[n])
                                   for n, w in trained.items()}
        info["hvp_method"] = "double_backward"
        scales = _filter_scales(model, trained)
        targets = [scales.get(n, w) for n, w in trained.items()]
        grad, grad_sq, sums = second_order_sums(
            model, batches, temperature, names, params, budget, info, first_order=first_order,
            targets=targets, scales={model.get_submodule(n.rpartition(".")[0]): s
                                     for n, s in scales.items()})
        dots = [d if n in scales else filter_sums(trained[n].detach() * d)
                for n, d in zip(trained, sums)]
        means = dict(zip(trained, weighted_mean_(dots, total_samples(batches))))
        _correct_for_folds(model, means, grad)  # in eval mode: folding is of eval-mode BatchNorm
    return grad, grad_sq, means


def _correct_for_folds(model: nn.Module, dots: dict[str, Tensor], grad: dict[str, Tensor]) -> None:
    """Add back what folding BatchNorm into a scaled convolution hides. With W' = W·γ/σ, the
    scales reach W through W' but ∂W'/∂γ = W/σ, which moves with W, lies outside their graph:
    its share of Σ_{i∈p} θ_i (Hg)_i is g_γ·(∂L/∂γ through W'). The folded bias c = β + (b − μ)γ/σ
    (b the convolution's own bias) has ∂L/∂c = ∂L/∂β, so that share is g_γ·(g_γ + (μ − b)/σ·g_β),
    linear in the batch gradients and so exact for their sample-weighted mean."""
    for conv, bn_name in foldable_pairs(model).items():
        bn, weight = model.get_submodule(bn_name), f"{conv}.weight" if conv else "weight"
        prefix = f"{bn_name}." if bn_name else ""
        if weight not in dots or f"{prefix}weight" not in grad:
            continue  # not a scaled weight, or γ frozen: nothing moves with W
        g_gamma, g_beta = grad[f"{prefix}weight"], grad[f"{prefix}bias"]
        offset = bn.running_mean if model.get_submodule(conv).bias is None else (
            bn.running_mean - model.get_submodule(conv).bias.detach())
        ratio = offset / torch.sqrt(bn.running_var + bn.eps)
        dots[weight] = dots[weight] + g_gamma * (g_gamma + ratio * g_beta)


def filter_sums(products: Tensor) -> Tensor:
    """Σ over every dim but the output-channel dim (the filter's weights)."""
    return products.flatten(1).sum(1) if products.dim() > 1 else products


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


def second_order_sums(model, batches, temperature, names, params, budget, info, *,
                      first_order=None, targets=None,
                      scales=None) -> tuple[dict, dict, list[Tensor]]:
    """(g, E[g²], Σ_b n_b ∂/∂targets ⟨ḡ, ∇L_b⟩); targets default to ``params`` (giving
    Σ_b n_b H_b g; the caller divides by N after summing over ranks).
    Without ``first_order``, one forward and create_graph backward per batch gives g and E[g²]
    and keeps the graphs that fit ``budget``; one backward pass through them follows, and the
    batches whose graph did not fit are recomputed. With it, every batch is recomputed."""
    targets = list(params) if targets is None else targets
    kept, dropped = [], list(range(len(batches)))
    if first_order is None:
        first_order, kept, dropped = _first_pass(model, batches, temperature, names, params,
                                                 budget, info, scales)
    grad, grad_sq = first_order
    vec = [grad[n].detach() for n in names]
    recomputed = set(dropped)
    sizes = [sample_count(b) for i, b in enumerate(batches) if i not in recomputed]
    sums = differentiate(kept, vec, targets, sizes)
    info["hvp_kept"] = f"{len(kept)}/{len(batches)}"
    del kept
    for index in dropped:
        x, y = batches[index]
        again = graph_grads(model, x, y, temperature, params, scales)
        for acc, d in zip(sums, differentiate([again], vec, targets, [sample_count((x, y))])):
            acc.add_(d)
    return grad, grad_sq, sums


def _first_pass(model, batches, temperature, names, params, budget, info, scales):
    """g, E[g²] (means over the samples of every batch and rank), the kept graphs (of the first
    batches) and the dropped batches."""
    moments = Moments(params)
    kept, dropped, capacity = [], [], len(batches)
    for index, (x, y) in enumerate(batches):
        saved = probing.SavedBytes(params) if index == 0 else None
        if index < capacity:
            grads = graph_grads(model, x, y, temperature, params, scales, saved)
        else:
            grads = torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                        allow_unused=True)
        if saved is not None:
            capacity = round(probing.kept_share(saved.bytes, budget, len(batches)) * len(batches))
            info["hvp_graph_mb"] = round(saved.bytes / 2 ** 20, 1)
        moments.add(grads, sample_count((x, y)))
        if index < capacity:
            kept.append(grads)
        else:
            dropped.append(index)
    return moments.means(names), kept, dropped


def _choose(model, batches, temperature, names, params, method, info, memory,
            first_order) -> tuple[float, str]:
    """The byte budget for kept graphs and the method: ``method`` itself unless "auto"."""
    device = batches[0][0].device
    budget = probing.MEMORY_SHARE * probing.free_memory(device) if memory is None else memory
    if method != "auto":
        return budget, method
    return budget, _auto(model, batches, temperature, names, params, info, budget, first_order)


def _auto(model, batches, temperature, names, params, info, budget, first_order) -> str:
    key = probing.probe_key(model, batches[0][0])
    info["hvp_probe"] = "earlier in this process" if key in PROBES else "this call, batch 1"
    if key not in PROBES:
        PROBES[key] = probe(model, batches[0], temperature, names, params)
    found = PROBES[key]
    kept = 0.0 if first_order is not None else probing.kept_share(found.graph_bytes, budget,
                                                                   len(batches))
    info["hvp_seconds"] = {m: round(s, 6) for m, s in found.costs(kept).items()}
    if found.jvp_error:
        info["hvp_fallback_reason"] = found.jvp_error
    # ranks time their own probes; they must agree, as the two methods' collectives differ
    return as_on_rank_zero(found.choice(kept))
