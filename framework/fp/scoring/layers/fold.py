"""Eval-mode BatchNorm folded into the convolution feeding it: conv(x, W)·s + c = conv(x, W·s) + c.

A folded BatchNorm costs no pass over the convolution's output in either direction, but the fold
costs passes over the weight (W·s forward; ∂W and ∂s backward, and once more in a double
backward). Which costs more depends on the shapes and the machine, so whether a pair folds is a
``shortcuts`` decision (timed, or fixed by its mode). Either way the function and its
derivatives are the same; only rounding differs.

``foldable_pairs`` finds the pairs in the model's fx graph (``fp.scoring.graph``),
``gradient_pass.first_order_layers`` folds them for a plain gradient pass, and ``Folds`` records
which pairs one Hessian-gradient computation folds (``double_backward`` folds them into its own
convolutions).
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import torch
from torch import Tensor, nn

from fp.scoring.graph import BATCHNORM, traced
from fp.scoring.layers.shortcuts import NONE, Shortcuts

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_plain_conv(module: nn.Module) -> bool:
    """A convolution computed by torch's own forward with fixed zero padding: one whose class
    replaces ``forward`` (timm's ``Conv2dSame`` pads by the input's size first) is not, since the
    shortcut layers call the convolution itself."""
    return (isinstance(module, CONVS) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and type(module).forward in (cls.forward for cls in CONVS))


def is_fixed_batchnorm(module: nn.Module) -> bool:
    return (isinstance(module, BATCHNORM) and not module.training
            and module.running_mean is not None and module.running_var is not None)


def batchnorm_affine(module: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as the per-channel affine map x·s + c it is: (s, c)."""
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    return scale, shift


def folded_weight_and_bias(conv: nn.Module, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """(W·s, b·s + c): the convolution's parameters with the BatchNorm after it folded in."""
    scale, shift = batchnorm_affine(bn)
    weight, bias = conv.weight, conv.bias
    weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
    return weight, shift if bias is None else torch.addcmul(shift, bias, scale)


class Folds:
    """The pairs one computation folds: those of ``foldable_pairs`` that ``shortcuts.fold``
    names, the same for every batch, so that a correction for the fold
    (``fp.scoring.hvp.filterwise``) applies to exactly ``folded()``. It also carries which
    convolutions take their weight gradient as a matrix product (``shortcuts.matmul``)."""

    def __init__(self, model: nn.Module, shortcuts: Shortcuts = NONE):
        self.pairs = foldable_pairs(model)
        self.shortcuts = shortcuts

    def fold(self, conv_name: str) -> bool:
        return conv_name in self.pairs and conv_name in self.shortcuts.fold

    def folded(self) -> dict[str, str]:
        return {conv: bn for conv, bn in self.pairs.items() if self.fold(conv)}


def skipped(x: Tensor) -> Tensor:
    return x


@contextlib.contextmanager
def patched_forwards(forwards: dict[nn.Module, object]) -> Iterator[None]:
    """Within the block, each module's instance ``forward`` is the one given; after it, its
    class's again."""
    patched = []
    try:
        for module, forward in forwards.items():
            module.forward = forward
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _gamma_has_beta(bn: nn.Module) -> bool:
    """A trainable γ folds only beside a trainable β: filter-wise products of a folded pair
    need ∂L/∂β to correct for the fold (``fp.scoring.hvp.filterwise``)."""
    return (bn.weight is None or not bn.weight.requires_grad
            or (bn.bias is not None and bn.bias.requires_grad))


def foldable_pairs(model: nn.Module) -> dict[str, str]:
    """Convolution name → name of the eval-mode BatchNorm that is its output's only consumer,
    each module called exactly once; {} when torch.fx cannot trace the model. Read off the
    model's one remembered trace (``fp.scoring.graph.traced``) and its modules as they are now
    (modes, frozen γ/β, forwards set on an instance)."""
    graph = traced(model)
    if graph is None:
        return {}
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not is_plain_conv(modules[node.target]):
            continue
        if len(node.users) != 1:
            continue
        (user,) = node.users
        if (user.op == "call_module" and is_fixed_batchnorm(modules[user.target])
                and user.args[:1] == (node,) and len(user.args) + len(user.kwargs) == 1
                and calls[node.target] == 1 and calls[user.target] == 1
                and not any("forward" in vars(modules[n]) for n in (node.target, user.target))
                and modules[user.target].num_features == modules[node.target].out_channels
                and _gamma_has_beta(modules[user.target])):
            pairs[node.target] = user.target
    return pairs
