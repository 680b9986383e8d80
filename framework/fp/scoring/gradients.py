"""First-order statistics of the scoring loss, computed once per prune event and shared by measures
(the Hessian-gradient product is in ``fp.scoring.hvp``).

L_b is the cross-entropy of logits/T on scoring batch b (the mean over its n_b samples). As in
the paper's seed code the model is in eval mode (BatchNorm on running statistics), every
trainable parameter takes part, and every statistic is a mean over *samples*, so a short last
batch counts by its size: with N = Σ_b n_b,

    g = Σ_b n_b ∇L_b / N,    E[g²] = Σ_b n_b (∇L_b)² / N,    Hg = Σ_b n_b ∇(ḡᵀ∇L_b) / N,

ḡ = g detached. Under torch.distributed the sums and N are summed over ranks before dividing, so
each rank's share counts by its samples and every rank ends with the same statistics.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fp.nn import batch_loss, eval_mode
from fp.scoring.layers.gradient_pass import first_order_layers
from fp.scoring.layers.shortcuts import NONE, Shortcuts

Batch = tuple[Tensor, Tensor]


def sample_count(batch: Batch) -> int:
    """n_b, the samples the batch's mean loss averages over: its number of targets."""
    return int(batch[1].shape[0])


def total_samples(batches: Sequence[Batch]) -> int:
    """N = Σ_b n_b over the batches (one rank's)."""
    return sum(sample_count(batch) for batch in batches)


def trainable(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    """The names and the parameters that require a gradient, in ``named_parameters`` order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


@dataclass(frozen=True, eq=False)
class ScoringLoss:
    """What the statistics are of: L_b, the cross-entropy of ``model``'s logits/T on each of
    ``batches``, as a function of its trainable parameters ``params`` (named ``names``), and the
    exact shortcuts its passes take (``fp.scoring.layers.shortcuts``; none by default)."""

    model: nn.Module
    batches: Sequence[Batch]
    temperature: float
    names: list[str]
    params: list[nn.Parameter]
    shortcuts: Shortcuts = NONE

    @classmethod
    def of(cls, model: nn.Module, batches: Sequence[Batch], temperature: float,
           shortcuts: Shortcuts = NONE) -> "ScoringLoss":
        """The scoring loss of ``model`` on ``batches`` at T, over its trainable parameters."""
        names, params = trainable(model)
        return cls(model, batches, temperature, names, params, shortcuts)


def is_distributed() -> bool:
    """Whether a default process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of the default process group (or not distributed)."""
    return not is_distributed() or dist.get_rank() == 0


def as_on_rank_zero(value):
    """``value`` as rank 0 of the default process group has it, on every rank (a picklable
    value; itself outside torch.distributed)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weighted_mean_(sums: Sequence[Tensor], count: float) -> Sequence[Tensor]:
    """Each of ``sums`` (a Σ_b n_b s_b) divided in place by ``count`` (its Σ_b n_b), both first
    summed over the ranks of the default process group: one collective for all of them, so the
    result is the mean over every rank's samples, identical on every rank."""
    if not sums:
        return sums
    if not is_distributed():
        for t in sums:
            t.div_(count)
        return sums
    dtype = torch.promote_types(sums[0].dtype, torch.float32)  # N exact whatever the params
    flat = torch.cat([t.reshape(-1).to(dtype) for t in sums]
                     + [torch.tensor([float(count)], dtype=dtype, device=sums[0].device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat[:-1] / flat[-1]
    offset = 0
    for t in sums:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return sums


class Moments:
    """Running sums of w_b ∇L_b and w_b (∇L_b)² over the batches ``add``ed (either may be left
    out: ``plain``, ``squares``), and N = Σ_b n_b. With ``samples`` (N over every batch to come,
    known up front outside torch.distributed), w_b = n_b / N and the sums are the means
    already; otherwise w_b = n_b and ``means`` divides by N summed over the ranks. The first
    batch's products start the sums, so no zero-filled buffer is written first; a first
    gradient the pass owns (``owned``) becomes its sum, or its square, in place."""

    def __init__(self, params: Sequence[Tensor], samples: int | None = None,
                 squares: bool = True, plain: bool = True):
        self.params, self.samples, self.squares, self.plain = params, samples, squares, plain
        self.total: list[Tensor] | None = None
        self.total_sq: list[Tensor] | None = None
        self.count, self.started = 0, False

    def add(self, grads: Sequence[Tensor | None], n: int) -> None:
        w = n if self.samples is None else n / self.samples
        if not self.started:
            self._start(grads, w)
        else:
            for index, grad in enumerate(grads):
                if grad is not None:
                    grad = grad.detach()
                    if self.plain:
                        self.total[index].add_(grad, alpha=w)
                    if self.squares:
                        self.total_sq[index].addcmul_(grad, grad, value=w)
        self.count += n

    def _start(self, grads: Sequence[Tensor | None], w: float) -> None:
        self.started = True
        mine = owned(grads, self.params)
        zero = [torch.zeros_like(p) if g is None else None for g, p in zip(grads, self.params)]
        if self.squares:  # w·g², before g itself may be scaled in place; in place if g is not kept
            self.total_sq = [z if g is None else torch.addcmul(
                g.new_zeros(()), g.detach(), g.detach(), value=w,
                out=g if own and not self.plain else None)
                for g, own, z in zip(grads, mine, zero)]
        if self.plain:
            self.total = [z if g is None else (g.mul_(w) if w != 1 else g) if own
                          else g.detach() * w for g, own, z in zip(grads, mine, zero)]

    def means(self, names: Sequence[str]) -> tuple[dict[str, Tensor] | None,
                                                   dict[str, Tensor] | None]:
        """(g, E[g²]) by parameter name, over this rank's samples and every other rank's; each
        is None when the sums left it out."""
        if not self.started:
            self._start([None] * len(self.params), 1.0)
        sums = (self.total if self.plain else []) + (self.total_sq if self.squares else [])
        means = sums if self.samples is not None else weighted_mean_(sums, self.count)
        plain = len(names) if self.plain else 0
        return (dict(zip(names, means[:plain])) if self.plain else None,
                dict(zip(names, means[plain:])) if self.squares else None)


def owned(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> list[bool]:
    """Which of one batch's gradients the pass may keep and overwrite: a tensor outside any
    graph, not a view, laid out densely, sharing memory with no other gradient and no parameter
    (autograd may hand one tensor to two parameters, or an expanded view)."""
    ptrs = [None if g is None else g.untyped_storage().data_ptr() for g in grads]
    taken = Counter(ptrs) + Counter(p.untyped_storage().data_ptr() for p in params)
    return [g is not None and taken[ptr] == 1 and g._base is None and not g.requires_grad
            and (g.is_contiguous() or (g.dim() == 4
                                       and g.is_contiguous(memory_format=torch.channels_last)))
            for g, ptr in zip(grads, ptrs)]


def batch_grads(model: nn.Module, x: Tensor, y: Tensor, temperature: float,
                params: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
    """∇L_b for each of ``params`` (None where L_b does not reach it), no graph kept."""
    return torch.autograd.grad(batch_loss(model, x, y, temperature), params, allow_unused=True)


def gradient_moments(batches: Sequence[Batch], params: Sequence[Tensor],
                     grads_of: Callable[[int, Tensor, Tensor], Sequence[Tensor | None]],
                     squares: bool = True, plain: bool = True) -> Moments:
    """The sample-weighted sums of every batch's gradients (``grads_of(index, x, y)``) and their
    squares: the one pass behind g and E[g²], whether or not it also keeps graphs
    (``fp.scoring.hvp``)."""
    moments = Moments(params, None if is_distributed() else total_samples(batches), squares, plain)
    for index, (x, y) in enumerate(batches):
        moments.add(grads_of(index, x, y), sample_count((x, y)))
    return moments


def mean_grad_and_sq(model: nn.Module, batches: list[Batch], temperature: float,
                     squares: bool = True, plain: bool = True, shortcuts: Shortcuts = NONE
                     ) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
    """g (None unless ``plain``) and E[g²] (None unless ``squares``) over all trainable
    parameters, from one forward and backward per batch, taking ``shortcuts``."""
    names, params = trainable(model)
    if not names:
        return ({} if plain else None), ({} if squares else None)
    # the same gradient, cheaper where decided: folded BatchNorms, matrix-product weight gradients
    with eval_mode(model), torch.enable_grad(), first_order_layers(model, shortcuts):
        moments = gradient_moments(batches, params,
                                   lambda _, x, y: batch_grads(model, x, y, temperature, params),
                                   squares, plain)
    return moments.means(names)
