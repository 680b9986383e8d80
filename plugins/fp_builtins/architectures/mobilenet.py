"""MobileNet-V1 for CIFAR (Howard et al. 2017), the variant of the seed paper's code."""
from __future__ import annotations

from typing import Annotated

from torch import nn

import fp
from fp.errors import ConfigError
from fp_builtins.architectures._layers import Init, PooledClassifier, conv_bn_relu

#: pointwise widths of the depthwise-separable blocks; (width, 2) strides the depthwise conv.
#: The stem keeps stride 1, so a 32x32 input ends at 2x2 before the pool.
MOBILENET_V1_BLOCKS = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
                       (1024, 2), 1024)
STEM_WIDTH = 32


def separable_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU then pointwise 1x1 conv-BN-ReLU."""
    return nn.Sequential(*conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels),
                         *conv_bn_relu(in_channels, out_channels, kernel_size=1))


class MobileNetV1(PooledClassifier):
    """MobileNet-V1 for CIFAR (3x3 stride-1 stem, 13 depthwise-separable blocks, 3.2M params)."""

    name = "mobilenet_v1"

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 width_multiplier: Annotated[float, fp.Range(gt=0)] = 1.0,
                 init: Init = None) -> None:
        if width_multiplier <= 0:
            raise ConfigError(f"mobilenet_v1.width_multiplier must be positive, "
                              f"got {width_multiplier}.")

        def scaled(width: int) -> int:
            return max(1, round(width * width_multiplier))

        width = scaled(STEM_WIDTH)
        layers = [nn.Sequential(*conv_bn_relu(in_channels, width))]
        for entry in MOBILENET_V1_BLOCKS:
            out_width, stride = entry if isinstance(entry, tuple) else (entry, 1)
            layers.append(separable_block(width, scaled(out_width), stride))
            width = scaled(out_width)
        super().__init__(nn.Sequential(*layers), width, num_classes, init)
