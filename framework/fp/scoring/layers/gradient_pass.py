"""The layers a plain gradient pass (g, E[g²]) runs: torch's own, with the exact shortcuts a
``shortcuts.Shortcuts`` decision (``fp.scoring.shortcut_choice``) names for each convolution.

- An eval-mode BatchNorm that alone consumes a convolution's output is folded into it (``fold``),
  so it costs no pass over the activations.
- A convolution whose weight gradient is taken as one matrix product runs as
  ``conv.Convolution``, whose backward takes it so.

Every replacement computes the same function and gradient; only rounding differs.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from torch import Tensor, nn

from fp.scoring.layers.conv import Convolution, Geometry
from fp.scoring.layers.fold import (folded_weight_and_bias, foldable_pairs, is_plain_conv,
                                    patched_forwards, skipped)
from fp.scoring.layers.shortcuts import NONE, Shortcuts


def _convolution(conv: nn.Module, by_matmul: bool
                 ) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """conv(x, W) + b with ``conv``'s geometry: torch's own, or ``Convolution`` taking its
    weight gradient as a matrix product."""
    if not by_matmul:
        return conv._conv_forward
    geometry = Geometry(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                        conv.groups).matmul()

    def convolve(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if weight.requires_grad:
            return Convolution.apply(x, weight, bias, None, geometry)
        return conv._conv_forward(x, weight, bias)
    return convolve


def _forward(conv: nn.Module, bn: nn.Module | None, by_matmul: bool):
    convolve = _convolution(conv, by_matmul)
    if bn is None:
        return lambda x: convolve(x, conv.weight, conv.bias)
    return lambda x: convolve(x, *folded_weight_and_bias(conv, bn))


@contextlib.contextmanager
def first_order_layers(model: nn.Module, shortcuts: Shortcuts = NONE) -> Iterator[nn.Module]:
    """Within the block, every plain convolution of ``model`` (not one whose forward someone
    already replaced) that ``shortcuts`` names runs as above: with its BatchNorm folded in
    (``shortcuts.fold``, for those of ``foldable_pairs``) and its weight gradient a matrix
    product (``shortcuts.matmul``). Enter it with the model in eval mode."""
    if not (shortcuts.fold or shortcuts.matmul):
        yield model
        return
    modules = dict(model.named_modules())
    paired = {conv: bn for conv, bn in foldable_pairs(model).items() if conv in shortcuts.fold}
    forwards = {}
    for name, module in modules.items():
        if not is_plain_conv(module) or "forward" in vars(module):
            continue
        if name not in paired and name not in shortcuts.matmul:
            continue
        bn = modules[paired[name]] if name in paired else None
        forwards[module] = _forward(module, bn, name in shortcuts.matmul)
        if bn is not None:
            forwards[bn] = skipped
    with patched_forwards(forwards):
        yield model
