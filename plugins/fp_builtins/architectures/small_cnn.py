"""A compact CNN for the offline quickstart (scikit-learn's 8x8 digits, resized to 16x16 or
32x32): trains in seconds on a CPU and has enough filters to prune half of them."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from fp.errors import ConfigError
from fp_builtins.architectures._layers import (KAIMING_FAN_OUT, Init, PooledClassifier,
                                              conv_bn_relu)

#: a 2x2 max-pool follows these conv indices: two halvings keep an 8x8 input at 2x2 or more
POOL_AFTER = (0, 2)


class SmallCNN(PooledClassifier):
    """Small CNN for digits-sized inputs (conv-BN-ReLU x4, two max-pools, 0.13M params)."""

    name = "small_cnn"
    default_init = KAIMING_FAN_OUT  # not a paper model: keeps the quickstart's numbers

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 widths: Sequence[int] = (32, 64, 64, 128), init: Init = None) -> None:
        if not widths or min(widths) < 1:
            raise ConfigError(f"small_cnn.widths must be one or more positive conv widths, "
                              f"got {tuple(widths)}.")
        layers, width = [], in_channels
        for index, out_width in enumerate(widths):
            layers += conv_bn_relu(width, out_width)
            if index in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            width = out_width
        super().__init__(nn.Sequential(*layers), width, num_classes, init)
