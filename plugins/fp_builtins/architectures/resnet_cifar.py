"""The CIFAR ResNets of depth 6n+2 (He et al. 2016, Sec. 4.2): three stages of n basic blocks
with widths 16, 32 and 64."""
from __future__ import annotations

from fp.errors import ConfigError
from fp_builtins.architectures._layers import Init
from fp_builtins.architectures._resnet import ResNet


class CifarResNet(ResNet):
    """CIFAR ResNet of any depth 6n+2 (three stages of n basic blocks, widths 16/32/64)."""

    name = "cifar_resnet"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, depth: int = 20,
                 width: int = 16, init: Init = None) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"a CIFAR ResNet's depth must be 6n+2 (8, 14, 20, 32, 56, 110, "
                              f"...), got {depth}.")
        n = (depth - 2) // 6
        super().__init__(num_classes, in_channels, (n, n, n), (width, 2 * width, 4 * width), init)


class ResNet20(CifarResNet):
    """ResNet-20 for CIFAR (3 stages of 3 basic blocks, 0.27M params)."""

    name = "resnet20"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, depth=20, width=width, init=init)


class ResNet32(CifarResNet):
    """ResNet-32 for CIFAR (3 stages of 5 basic blocks, 0.47M params)."""

    name = "resnet32"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, depth=32, width=width, init=init)


class ResNet56(CifarResNet):
    """ResNet-56 for CIFAR (3 stages of 9 basic blocks, 0.86M params)."""

    name = "resnet56"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, depth=56, width=width, init=init)


class ResNet110(CifarResNet):
    """ResNet-110 for CIFAR (3 stages of 18 basic blocks, 1.7M params)."""

    name = "resnet110"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, depth=110, width=width, init=init)
