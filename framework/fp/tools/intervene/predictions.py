"""The numbers an intervention records from the passes of ``effects``: the first-order predictions
of zeroing and removal (their formulas are in ``effects``' docstring), Θᵀg, and ||g||² over the
parameters that survive removal."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fp.nn import eval_mode, prunable_layers
from fp.scoring.graph import BATCHNORM, following_batchnorms
from fp.tools.intervene.effects import Pass, Probes
from fp.tools.intervene.removal import Removal, zeroed_entries

#: the channel dim of a layer's output: last for linear layers (tokens may come first), else 1
LINEAR_CHANNELS = -1


def probe_sources(model: nn.Module, example: Tensor) -> dict[str, int]:
    """Module name -> channel dim of its output, for the module whose output each prunable
    layer's channels leave last before the next layer: its following BatchNorm, else itself."""
    modules = dict(model.named_modules())
    weights = [name for name, _ in prunable_layers(model)]
    return {source: LINEAR_CHANNELS if isinstance(modules[source], nn.Linear) else 1
            for source in sources_of(model, weights, example).values()}


def sources_of(model: nn.Module, weights: list[str], example: Tensor) -> dict[str, str]:
    """Weight name -> the BatchNorm that follows its layer, else the layer's own module name."""
    bns = following_batchnorms(model, weights, example)
    return {w: bns.get(w) or w.rpartition(".")[0] for w in weights}


def predicted_zeroing(model: nn.Module, dense: Pass, removal: Removal, example: Tensor) -> float:
    """−Σ_{i∈R_a} θ_i g_i: zeroing the chosen filters' weight rows and biases."""
    return minus_theta_g(model, dense.grads, zeroed_entries(model, removal, example, norms=False))


def predicted_removal(model: nn.Module, dense: Pass, removal: Removal, example: Tensor) -> float:
    """−Σ_{i∈R_b} θ_i g_i − Σ_c Σ_{n,p} (∂L/∂a_c) h_c: removing the chosen filters (``dense``
    must carry the probes of ``probe_sources``)."""
    weights = zeroed_entries(model, removal, example, norms=False)
    return minus_theta_g(model, dense.grads, weights) + removal_term(model, dense.probes, removal,
                                                                     example)


def minus_theta_g(model: nn.Module, grads: dict[str, Tensor], entries: dict[str, Tensor]) -> float:
    """−Σ_{i∈entries} θ_i g_i (``entries``: parameter name -> bool mask)."""
    params = dict(model.named_parameters())
    return -sum(float((params[n].detach() * grads[n])[mask].sum()) for n, mask in entries.items()
                if n in grads)


def constant_left(model: nn.Module, source: str, channels: int, rank: int,
                  activation: nn.Module | None) -> Tensor:
    """h_c: what ``source``'s channels (or the activation reading them) output once the conv
    before them outputs 0: the BatchNorm's eval output of 0 (0 for a layer without one)."""
    module = model.get_submodule(source)
    weight = next(model.parameters())
    zero = torch.zeros((1, channels) + (1,) * (rank - 2), dtype=weight.dtype, device=weight.device)
    with torch.no_grad(), eval_mode(model):
        value = module(zero) if isinstance(module, BATCHNORM) else zero
        value = activation(value.clone()) if activation is not None else value
    return value.reshape(-1)


def removal_term(model: nn.Module, probes: Probes, removal: Removal, example: Tensor) -> float:
    """−Σ_c Σ_{n,p} (∂L/∂a_c) h_c over the physically removed channels of every removed weight."""
    sources = sources_of(model, list(removal.removed), example)
    total = 0.0
    for weight, rows in removal.removed.items():
        source = sources[weight]
        read = probes.read_at(source)
        if read is None:  # a layer the forward pass never reached: it changes no loss
            continue
        grad, activation = read
        h = constant_left(model, source, len(grad), probes.dims[source], activation)
        rows = rows.to(grad.device)
        total -= float((grad[rows] * h[rows]).sum())
    return total


def theta_g(model: nn.Module, grads: dict[str, Tensor]) -> float:
    """Θᵀg = Σ θ_i g_i over every trainable parameter."""
    params = dict(model.named_parameters())
    return sum(float((params[n].detach() * g).sum()) for n, g in grads.items())


def grad_norm_sq(grads: dict[str, Tensor]) -> float:
    return sum(float(g.double().square().sum()) for g in grads.values())


def surviving_before(dense_grads: dict[str, Tensor], removal: Removal) -> float:
    """||g||² of the dense model over the entries that survive removal (``Removal.survivors``):
    the kept filters' rows and the next layers' kept input slices, never a removed entry."""
    return sum(float(dense_grads[n].reshape(-1)[idx.to(dense_grads[n].device)].double()
                     .square().sum()) for n, idx in removal.survivors.items() if n in dense_grads)


def log_ratio(after: float, before: float) -> float:
    """log(after / before); ±inf or NaN where a side is 0."""
    if before > 0 and after > 0:
        return math.log(after / before)
    return float("nan") if after == before else (math.inf if after > before else -math.inf)
