"""First-order statistics of the scoring loss, computed once per prune event and shared by measures
(the Hessian-gradient product is in ``hvp``).

L_b is the cross-entropy of logits/T on scoring batch b (mean over the batch). As in the paper's
seed code the model is in eval mode (BatchNorm on running statistics) and every trainable parameter
takes part: g = mean_b ∇L_b, E[g²] = mean_b (∇L_b)², and Hg = mean_b ∇(ḡᵀ∇L_b) with ḡ = g
detached. Means are over batches (each batch weighs the same), then over distributed ranks.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode, then give every submodule its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:  # the attribute, not train(): that would recurse
            module.training = training


def batch_loss(model: nn.Module, x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of the tempered logits, the mean over the batch."""
    return F.cross_entropy(model(x) / temperature, y)


def trainable(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def _all_reduce_mean(tensors: Sequence[Tensor]) -> Sequence[Tensor]:
    """Average ``tensors`` in place over the ranks of the default process group, so every rank
    ranks filters on identical scores; a no-op outside torch.distributed or with one rank."""
    if not tensors or not (dist.is_available() and dist.is_initialized()):
        return tensors
    world = dist.get_world_size()
    if world < 2:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])  # one collective instead of one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return tensors


def mean_grad_and_sq(model: nn.Module, batches: list[Batch],
                     temperature: float) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """g and E[g²] over all trainable parameters, from one forward and backward per batch."""
    names, params = trainable(model)
    if not names:
        return {}, {}
    from fp.scoring.second_order import cheap_double_backward  # it reads eval_mode from here

    total = [torch.zeros_like(p) for p in params]
    total_sq = [torch.zeros_like(p) for p in params]
    # the folded layers compute the same gradient without BatchNorm's own passes over the data
    with eval_mode(model), torch.enable_grad(), cheap_double_backward(model):
        for x, y in batches:
            grads = torch.autograd.grad(batch_loss(model, x, y, temperature), params,
                                        allow_unused=True)
            for acc, acc_sq, grad in zip(total, total_sq, grads):
                if grad is not None:
                    acc.add_(grad)
                    acc_sq.addcmul_(grad, grad)
    means = _all_reduce_mean([t.div_(len(batches)) for t in total + total_sq])
    return dict(zip(names, means[:len(names)])), dict(zip(names, means[len(names):]))
