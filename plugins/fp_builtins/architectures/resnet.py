"""ResNet-18 and ResNet-34 in their CIFAR form (3x3 stride-1 stem, no max-pool), as in the seed
paper's code: four stages of basic blocks with widths 64, 128, 256 and 512."""
from __future__ import annotations

from fp_builtins.architectures._layers import Init
from fp_builtins.architectures._resnet import ResNet


def stage_widths(width: int) -> tuple[int, ...]:
    return (width, 2 * width, 4 * width, 8 * width)


class ResNet18(ResNet):
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool, stages of 2 basic blocks, 11.2M params)."""

    name = "resnet18"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, (2, 2, 2, 2), stage_widths(width), init)


class ResNet34(ResNet):
    """ResNet-34, CIFAR variant (3x3 stem, no max-pool, 3/4/6/3 basic blocks, 21.3M params)."""

    name = "resnet34"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 init: Init = None) -> None:
        super().__init__(num_classes, in_channels, (3, 4, 6, 3), stage_widths(width), init)
