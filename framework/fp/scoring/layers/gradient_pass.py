"""The layers a plain gradient pass (g, E[g²]) runs: torch's own, with two exact shortcuts.

- An eval-mode BatchNorm that alone consumes a convolution's output is folded into it where that
  pays (``fold.folding_pays``), so it costs no pass over the activations either way.
- On a CPU, a convolution whose weight gradient is cheaper as one matrix product
  (``conv.matmul_pays``: an ImageNet-style network's last stages at CIFAR size) runs as
  ``conv.Convolution``, whose backward takes it so.

Every replacement computes the same function and gradient; only rounding differs.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from torch import Tensor, nn

from fp.scoring.layers.conv import Convolution, Geometry, matmul_pays
from fp.scoring.layers.fold import (folded_weight_and_bias, foldable_pairs, folding_pays,
                                is_plain_conv, patched_forwards, skipped)


def _convolution(conv: nn.Module) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """conv(x, W) + b with ``conv``'s geometry: torch's own, or ``Convolution`` where its
    weight gradient is a matrix product."""
    geometry = Geometry(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                        conv.groups)

    def convolve(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if weight.requires_grad and matmul_pays(x, geometry.output_shape(x, weight),
                                                conv.groups):
            return Convolution.apply(x, weight, bias, None, geometry)
        return conv._conv_forward(x, weight, bias)
    return convolve


def _forward(conv: nn.Module, bn: nn.Module | None):
    convolve = _convolution(conv)
    if bn is None:
        return lambda x: convolve(x, conv.weight, conv.bias)
    unfolded = type(bn).forward  # the BatchNorm's own, while its instance forward is skipped

    def forward(x: Tensor) -> Tensor:
        if not folding_pays(x, conv):
            return unfolded(bn, convolve(x, conv.weight, conv.bias))
        return convolve(x, *folded_weight_and_bias(conv, bn))
    return forward


@contextlib.contextmanager
def first_order_layers(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every plain convolution of ``model`` (not one whose forward someone
    already replaced) runs as above, each of ``foldable_pairs`` with its BatchNorm folded in for
    each batch where that pays. Enter it with the model in eval mode."""
    modules = dict(model.named_modules())
    paired = {modules[conv]: modules[bn] for conv, bn in foldable_pairs(model).items()}
    forwards = {}
    for module in modules.values():
        if is_plain_conv(module) and "forward" not in vars(module):
            forwards[module] = _forward(module, paired.get(module))
            if module in paired:
                forwards[paired[module]] = skipped
    with patched_forwards(forwards):
        yield model
