"""Building blocks shared by the built-in architectures: one conv/BN/ReLU helper, one weight
initialisation and one classifier head, so no model carries its own copy of them."""
from __future__ import annotations

from torch import Tensor, nn


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
         groups: int = 1) -> nn.Conv2d:
    """A bias-free conv with 'same' padding (every conv here is followed by a BatchNorm, which
    makes a conv bias redundant, as in the seed paper's models)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, groups=groups, bias=False)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, relu_before_bn: bool = False) -> list[nn.Module]:
    """conv -> BN -> ReLU as a list of layers to splice into an ``nn.Sequential``.

    ``relu_before_bn`` gives conv -> ReLU -> BN, the order of the seed paper's VGG.
    """
    layers = [conv(in_channels, out_channels, kernel_size, stride, groups),
              nn.BatchNorm2d(out_channels), nn.ReLU()]
    if relu_before_bn:
        layers[1], layers[2] = layers[2], layers[1]
    return layers


def init_weights(model: nn.Module) -> None:
    """He (kaiming-normal, fan-out) init for convs and unit-scale, zero-shift BatchNorm: the
    usual initialisation of the CIFAR ResNet/VGG/MobileNet reference code."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class PooledClassifier(nn.Module):
    """``features`` -> global average pool -> one Linear: the head every built-in model shares.

    The pool is adaptive, so any input size works, and the Linear reads its width from the
    features at build time only, so physically pruned models keep running.
    """

    def __init__(self, features: nn.Module, feature_width: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feature_width, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
