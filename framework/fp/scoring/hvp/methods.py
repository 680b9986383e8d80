"""H_b v for one scoring batch, the two exact ways ``hvp`` chooses between, and the first-order
graphs double backward differentiates (see ``hvp`` for the maths)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from fp.nn import batch_loss, tempered_loss
from fp.scoring.hvp import choice as probing
from fp.scoring.layers.fold import Folds
from fp.scoring.layers.double_backward import cheap_double_backward

Scales = dict[nn.Module, Tensor]


def graph_grads(model: nn.Module, x: Tensor, y: Tensor, temperature: float,
                params: list[nn.Parameter], scales: Scales | None = None,
                saved: probing.SavedBytes | None = None,
                folds: Folds | None = None) -> tuple[Tensor | None, ...]:
    """∇L_b with its graph kept (create_graph), through the cheap-double-backward layers
    (``folds``: the BatchNorm folds of the computation this batch is part of)."""
    with cheap_double_backward(model, scales, folds), (saved or contextlib.nullcontext()):
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
        return tempered_loss(logits, y, temperature)

    primals = {n: p.detach() for n, p in zip(names, params)}
    tangents = dict(zip(names, vec))
    with warnings.catch_warnings():  # torch loads its forward-AD formulas via torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
        _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
    return [hv[n] for n in names]


HvpFn = Callable[..., list[Tensor]]
HVP_METHODS: dict[str, HvpFn] = {"double_backward": double_backward,
                                 "forward_over_reverse": forward_over_reverse}
