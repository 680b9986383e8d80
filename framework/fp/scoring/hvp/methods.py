"""H_b v for one scoring batch, the two exact ways ``fp.scoring.hvp`` chooses between, and the
first-order graphs double backward differentiates (see ``fp.scoring.hvp`` for the maths)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from fp.nn import batch_loss, tempered_loss
from fp.scoring.gradients import Batch, ScoringLoss
from fp.scoring.layers.double_backward import cheap_double_backward
from fp.scoring.layers.fold import Folds

Scales = dict[nn.Module, Tensor]


class SavedBytes:
    """Bytes of the tensors autograd saves inside the block, each storage counted once and the
    parameters not at all: what keeping the graph costs beyond the model itself."""

    def __init__(self, params: Sequence[Tensor]):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.skip.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> "SavedBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def graph_grads(loss: ScoringLoss, batch: Batch, scales: Scales | None = None,
                saved: SavedBytes | None = None,
                folds: Folds | None = None) -> tuple[Tensor | None, ...]:
    """∇L_b on ``batch`` with its graph kept (create_graph), through the cheap-double-backward
    layers (``folds``: the BatchNorm folds of the computation this batch is part of; without it,
    those of ``loss.shortcuts``)."""
    x, y = batch
    folds = folds or Folds(loss.model, loss.shortcuts)
    with cheap_double_backward(loss.model, scales, folds), (saved or contextlib.nullcontext()):
        return torch.autograd.grad(batch_loss(loss.model, x, y, loss.temperature), loss.params,
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


def double_backward(loss: ScoringLoss, batch: Batch, vec: list[Tensor]) -> list[Tensor]:
    """H_b v as ∇(vᵀ∇L_b): reverse mode twice, through the graph of the first gradient."""
    return differentiate([graph_grads(loss, batch)], vec, loss.params)


def forward_over_reverse(loss: ScoringLoss, batch: Batch, vec: list[Tensor]) -> list[Tensor]:
    """H_b v as the directional derivative (jvp) of the gradient function along v. Functional
    because eval-mode BatchNorm reads its running statistics without updating them."""
    x, y = batch

    def loss_of(weights: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(loss.model, weights, (x,))
        return tempered_loss(logits, y, loss.temperature)

    primals = {n: p.detach() for n, p in zip(loss.names, loss.params)}
    tangents = dict(zip(loss.names, vec))
    with warnings.catch_warnings():  # torch loads its forward-AD formulas via torch.jit.script
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
        _, hv = torch.func.jvp(torch.func.grad(loss_of), (primals,), (tangents,))
    return [hv[n] for n in loss.names]


#: H_b v of one batch: (the scoring loss, the batch, v as one tensor per trainable parameter)
HvpFn = Callable[[ScoringLoss, Batch, list[Tensor]], list[Tensor]]
#: each method's H_b v (tests may swap one out)
HVP_FUNCTIONS: dict[str, HvpFn] = {"double_backward": double_backward,
                                   "forward_over_reverse": forward_over_reverse}
#: the methods ``hvp_method`` may name besides "auto"
METHODS: tuple[str, ...] = tuple(HVP_FUNCTIONS)
