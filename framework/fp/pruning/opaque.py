"""Attention modules traced as one opaque node each (``opaque``): torch-pruning sees their inputs
and their output, never the reshapes inside, and takes them to be as wide as their embedding,
which fp does not prune (see ``attention``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn

from fp.errors import PruningError
from fp.pruning.heads import attention_modules


class StreamPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning's view of an opaque attention module: as wide as its embedding, which fp
    does not prune."""

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        raise PruningError(f"the embedding width of {type(layer).__name__} is not pruned.")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features

    get_in_channels = get_out_channels


class _Link(torch.autograd.Function):
    """The output of an opaque module, wired in autograd to its inputs only."""

    @staticmethod
    def forward(ctx, output: Tensor, *inputs: Tensor) -> Tensor:
        ctx.count = len(inputs)
        return output.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad, *[None] * ctx.count)


def _opaque_forward(forward):
    def opaque_forward(*args, **kwargs):
        with torch.no_grad():
            out = forward(*args, **kwargs)
        inputs = list({id(t): t for t in (*args, *kwargs.values())
                       if isinstance(t, Tensor) and t.requires_grad}.values())
        first = out[0] if isinstance(out, tuple) else out
        linked = _Link.apply(first, *inputs)
        return (linked, *out[1:]) if isinstance(out, tuple) else linked
    return opaque_forward


@contextlib.contextmanager
def opaque(model: nn.Module) -> Iterator[dict[type, StreamPruner]]:
    """Trace every attention module of ``model`` as one node; yields torch-pruning's customized
    pruners for them (nn.MultiheadAttention has its own)."""
    modules = list(attention_modules(model))
    own = {m: m.__dict__["forward"] for m in modules if "forward" in m.__dict__}
    try:
        for module in modules:
            module.forward = _opaque_forward(module.forward)
        yield {type(m): StreamPruner() for m in modules if not isinstance(m, nn.MultiheadAttention)}
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
            if module in own:
                module.forward = own[module]


__all__ = ["StreamPruner", "opaque"]
