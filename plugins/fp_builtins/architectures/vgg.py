"""VGG-13 as in the seed paper's CIFAR code: conv -> ReLU -> BN blocks and a single Linear."""
from __future__ import annotations

from typing import Sequence, Union

from torch import nn

from fp.errors import ConfigError
from fp_builtins.architectures._layers import Init, PooledClassifier, conv_bn_relu

#: conv widths, with "M" for a 2x2 max-pool (5 pools: a 32x32 input ends at 1x1)
VGG13_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG13(PooledClassifier):
    """VGG-13 for CIFAR (seed paper's variant: conv-ReLU-BN blocks, one Linear, 9.4M params)."""

    name = "vgg13"

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 layers: Sequence[Union[int, str]] = VGG13_LAYERS, init: Init = None) -> None:
        features, width = [], in_channels
        for item in layers:
            if item == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif isinstance(item, int) and item > 0:
                features += conv_bn_relu(width, item, relu_before_bn=True)
                width = item
            else:
                raise ConfigError(f"vgg13.layers may hold positive conv widths and 'M' only, "
                                  f"got {item!r}.")
        if width == in_channels:
            raise ConfigError("vgg13.layers must contain at least one conv width.")
        super().__init__(nn.Sequential(*features), width, num_classes, init)
