"""Hg = Σ_b n_b ∇(ḡᵀ∇L_b) / Σ_b n_b, ḡ = g detached (a mean over samples, see ``statistics``):
the Hessian-gradient product GraSP-style measures use, and its filter-wise form
Σ_{i∈p} θ_i (Hg)_i, which is all a filter score needs. Every path below weighs batch b by n_b.

Two exact ways to get H_b v:
- double backward: differentiate the first-order graph once more (``second_order`` makes its
  convolutions and BatchNorms cheap to differentiate). While g is not known yet, the pass that
  finds it keeps each batch's first-order graph (as far as ``memory`` allows), so H_b g is one
  more backward pass through it rather than a forward, a backward and the double backward. The
  filter-wise form differentiates with respect to per-filter scales instead of the weights
  (``conv_autograd.Convolution``), which drops the weight-gradient convolutions of that pass;
- forward over reverse: the directional derivative (jvp) of the gradient function along v.

"auto" uses what ``probe`` measured each to add to the gradient pass, once per process for a
model class, device, dtype and batch shape, and says which in ``info``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fp.nn import eval_mode
from fp.scoring.hvp import choice as probing
from fp.scoring.layers.fold import Folds
from fp.scoring.hvp.methods import HVP_METHODS, differentiate, graph_grads
from fp.scoring.gradients import (Batch, as_on_rank_zero, batch_grads, gradient_moments,
                                   mean_grad_and_sq, sample_count, total_samples, trainable,
                                   weighted_mean_)

PROBES = probing.PROBES  # the same dict: tests may swap it for an empty one


def probe(model: nn.Module, batch: Batch, temperature: float, names: list[str],
          params: list[nn.Parameter]) -> probing.Probe:
    """Time the gradient pass plain and with its graph, the double backward through that graph
    and forward over reverse, on one batch with its own gradient as v (timings do not depend on
    v). Forward-mode AD lacks formulas for some ops: then only double backward is available."""
    x, y = batch
    device = x.device
    start = probing.clock(device)
    vec = list(batch_grads(model, x, y, temperature, params))
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
        budget, chosen = choose_method(model, batches, temperature, names, params, method,
                                       info, memory, first_order)
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


def second_order_sums(model, batches, temperature, names, params, budget, info, *,
                      first_order=None, targets=None, scales=None,
                      folds: Folds | None = None) -> tuple[dict, dict, list[Tensor]]:
    """(g, E[g²], Σ_b n_b ∂/∂targets ⟨ḡ, ∇L_b⟩); targets default to ``params`` (giving
    Σ_b n_b H_b g; the caller divides by N after summing over ranks).
    Without ``first_order``, one forward and create_graph backward per batch gives g and E[g²]
    and keeps the graphs that fit ``budget``; one backward pass through them follows, and the
    batches whose graph did not fit are recomputed. With it, every batch is recomputed. Every
    batch folds the BatchNorms ``folds`` decides on (a fresh record without it)."""
    targets = list(params) if targets is None else targets
    folds = folds or Folds(model)
    kept, dropped = [], list(range(len(batches)))
    if first_order is None:
        first_order, kept, dropped = _first_pass(model, batches, temperature, names, params,
                                                 budget, info, scales, folds)
    grad, grad_sq = first_order
    vec = [grad[n].detach() for n in names]
    recomputed = set(dropped)
    sizes = [sample_count(b) for i, b in enumerate(batches) if i not in recomputed]
    sums = differentiate(kept, vec, targets, sizes)
    info["hvp_kept"] = f"{len(kept)}/{len(batches)}"
    del kept
    for index in dropped:
        x, y = batches[index]
        again = graph_grads(model, x, y, temperature, params, scales, folds=folds)
        for acc, d in zip(sums, differentiate([again], vec, targets, [sample_count((x, y))])):
            acc.add_(d)
    return grad, grad_sq, sums


def _first_pass(model, batches, temperature, names, params, budget, info, scales, folds):
    """g, E[g²] (means over the samples of every batch and rank), the kept graphs (of the first
    batches) and the dropped batches: ``mean_grad_and_sq``'s pass, keeping the graphs that fit
    ``budget`` (measured on the first batch)."""
    kept, dropped, capacity = [], [], [len(batches)]

    def grads_of(index: int, x: Tensor, y: Tensor):
        if index >= capacity[0]:
            dropped.append(index)
            return batch_grads(model, x, y, temperature, params)
        saved = probing.SavedBytes(params) if index == 0 else None
        grads = graph_grads(model, x, y, temperature, params, scales, saved, folds)
        if saved is not None:
            share = probing.kept_share(saved.bytes, budget, len(batches))
            capacity[0] = round(share * len(batches))
            info["hvp_graph_mb"] = round(saved.bytes / 2 ** 20, 1)
        if index < capacity[0]:
            kept.append(grads)
        else:
            dropped.append(index)
        return grads

    moments = gradient_moments(batches, params, grads_of)
    return moments.means(names), kept, dropped


def choose_method(model, batches, temperature, names, params, method, info, memory,
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
