"""Layers whose double backward is cheap, swapped in while Hessian-vector products run.

Reverse-over-reverse differentiates the backward pass itself. PyTorch's generic double backward
of a convolution computes the weight term as a convolution with batch and channels swapped, and
that of BatchNorm re-derives batch statistics even in eval mode; both cost several forward passes
more than needed. Here a convolution's backward is itself an autograd Function whose backward is
written out: for cotangents (a_x, a_w, a_b) of (∂x, ∂W, ∂b) it needs two forward convolutions and
one convolution_backward, the least a convolution's Hessian-vector product can cost. Eval-mode
BatchNorm, a fixed per-channel affine map, becomes that map in plain tensor operations, folded
into the convolution before it where the computation's shortcuts say so (``shortcuts``). Hardsigmoid and Hardswish, whose
double backward torch does not implement, become the same functions in plain operations.

Every replacement computes the same function and the same derivatives; only rounding differs.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from fp.scoring.layers.conv import Convolution, Geometry
from fp.scoring.layers.fold import (Folds, batchnorm_affine, folded_weight_and_bias,
                                is_fixed_batchnorm, is_plain_conv, patched_forwards, skipped)


def _channel_view(x: Tensor, values: Tensor) -> Tensor:
    return values.view(1, -1, *[1] * (x.dim() - 2))


def _conv_forward(module: nn.Module, geometry: Geometry, batchnorm: nn.Module | None,
                  scales: dict[nn.Module, Tensor], fold: bool):
    """The convolution, with the eval-mode BatchNorm that alone consumes its output applied
    after it, or folded in if ``fold``: conv(x, W)·s + c = conv(x, W·s) + c."""
    def forward(x: Tensor) -> Tensor:
        scale = scales.get(module)
        if batchnorm is not None and fold:
            return Convolution.apply(x, *folded_weight_and_bias(module, batchnorm), scale,
                                     geometry)
        out = Convolution.apply(x, module.weight, module.bias, scale, geometry)
        if batchnorm is None:
            return out
        bn_scale, shift = batchnorm_affine(batchnorm)
        return torch.addcmul(_channel_view(out, shift), out, _channel_view(out, bn_scale))
    return forward


def _affine_batchnorm_forward(module: nn.Module):
    def forward(x: Tensor) -> Tensor:
        scale, shift = batchnorm_affine(module)
        return torch.addcmul(_channel_view(x, shift), x, _channel_view(x, scale))
    return forward


def replaceable(module: nn.Module) -> bool:
    """Whether ``cheap_double_backward`` runs this module as ``Convolution``."""
    return is_plain_conv(module) and "forward" not in vars(module)


def _replacements(model: nn.Module, scales: dict[nn.Module, Tensor],
                  folds: Folds) -> dict[nn.Module, object]:
    modules = dict(model.named_modules())
    paired = {modules[bn] for bn in folds.pairs.values()}
    chosen = {}
    for name, module in modules.items():
        if "forward" in vars(module):  # someone already patched this instance: leave it be
            continue
        if is_plain_conv(module):
            bn = modules[folds.pairs[name]] if name in folds.pairs else None
            geometry = Geometry(tuple(module.stride), tuple(module.padding),
                                tuple(module.dilation), module.groups,
                                name in folds.shortcuts.matmul)
            chosen[module] = _conv_forward(module, geometry, bn, scales, folds.fold(name))
        elif is_fixed_batchnorm(module):
            chosen[module] = skipped if module in paired else _affine_batchnorm_forward(module)
        elif type(module) in _TWICE_DIFFERENTIABLE:
            chosen[module] = _TWICE_DIFFERENTIABLE[type(module)]
    return chosen


def _hardsigmoid(x: Tensor) -> Tensor:
    return torch.clamp(x / 6 + 0.5, 0, 1)  # relu6(x + 3) / 6


#: activations whose double backward torch lacks (hardsigmoid_backward has no derivative),
#: written in operations it can differentiate twice: the same function
_TWICE_DIFFERENTIABLE: dict[type, Callable[[Tensor], Tensor]] = {
    nn.Hardsigmoid: _hardsigmoid,
    nn.Hardswish: lambda x: x * _hardsigmoid(x),
}


@contextlib.contextmanager
def cheap_double_backward(model: nn.Module, scales: dict[nn.Module, Tensor] | None = None,
                          folds: Folds | None = None) -> Iterator[nn.Module]:
    """Within the block, ``model``'s convolutions and eval-mode BatchNorms run as the layers
    above. Enter it with the model already in the mode it will be differentiated in. ``scales``
    gives convolutions (``replaceable``) their filter scales (see ``Convolution``); ``folds``
    (shared by every batch of one computation) records which BatchNorms were folded."""
    with patched_forwards(_replacements(model, scales or {}, folds or Folds(model))):
        yield model
