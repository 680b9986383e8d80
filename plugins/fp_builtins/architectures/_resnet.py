"""The basic-block ResNet shared by the CIFAR ResNets (depth 6n+2) and ResNet-18/34.

Shortcuts that change shape are 1x1 conv (stride 2) + BN projections, as in the seed paper's
code (He et al. 2016, option B), not option A's zero padding: a projection is an ordinary conv
the dependency analysis can prune, where a zero-padded identity would fix the channel count.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from fp.errors import ConfigError
from fp_builtins.architectures._layers import Init, PooledClassifier, conv, conv_bn_relu


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, stride=stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = conv(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # out-of-place sum and a ReLU module: forward hooks and tracing see every tensor as is
        return self.relu(out + self.shortcut(x))


class ResNet(PooledClassifier):
    """A 3x3 stride-1 stem (no max-pool: CIFAR-sized inputs), stages of basic blocks whose first
    block halves the resolution (except in the first stage), global pool, one Linear."""

    def __init__(self, num_classes: int, in_channels: int, blocks_per_stage: Sequence[int],
                 stage_widths: Sequence[int], init: Init = None) -> None:
        if len(blocks_per_stage) != len(stage_widths) or min(blocks_per_stage, default=0) < 1:
            raise ConfigError(f"a ResNet needs at least one block per stage, got blocks "
                              f"{tuple(blocks_per_stage)} for widths {tuple(stage_widths)}.")
        width = stage_widths[0]
        parts = [("stem", nn.Sequential(*conv_bn_relu(in_channels, width)))]
        for index, (blocks, out_width) in enumerate(zip(blocks_per_stage, stage_widths)):
            first_stride = 1 if index == 0 else 2
            stage = [BasicBlock(width if i == 0 else out_width, out_width,
                                first_stride if i == 0 else 1) for i in range(blocks)]
            parts.append((f"layer{index + 1}", nn.Sequential(*stage)))
            width = out_width
        super().__init__(nn.Sequential(OrderedDict(parts)), width, num_classes, init)
