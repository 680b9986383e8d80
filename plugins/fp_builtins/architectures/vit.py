"""A small vision transformer for CIFAR-sized images: torchvision's ``VisionTransformer`` with its
attention as ``fp.attention.HeadAttention`` (a ``qkv`` Linear), so fp prunes its heads and MLP
widths.
"""
from __future__ import annotations

import math

from torch import nn

from fp.attention import expose_heads
from fp.errors import ConfigError
from fp_builtins.architectures._layers import Init, initialise


class VitCifar:
    """Small ViT for 32x32 images (4x4 patches, 4 blocks of 8 prunable heads, 0.55M params).

    torchvision's VisionTransformer with HeadAttention, and a small random classifier; ``init``
    None keeps that init (see ``fp_builtins.architectures._layers`` for the schemes)."""

    name = "vit_cifar"

    def __new__(cls, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                patch_size: int = 4, dim: int = 128, depth: int = 4, heads: int = 8,
                mlp_dim: int = 256, dropout: float = 0.0, init: Init = None) -> nn.Module:
        from torchvision.models.vision_transformer import VisionTransformer

        if min(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_dim) < 1:
            raise ConfigError("vit_cifar's sizes (num_classes, in_channels, image_size, "
                              "patch_size, dim, depth, heads, mlp_dim) must all be positive.")
        if image_size % patch_size:
            raise ConfigError(f"vit_cifar.image_size = {image_size} is not a multiple of "
                              f"vit_cifar.patch_size = {patch_size}.")
        if dim % heads:
            raise ConfigError(f"vit_cifar.dim = {dim} is not a multiple of vit_cifar.heads = "
                              f"{heads}.")
        model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=depth,
                                  num_heads=heads, hidden_dim=dim, mlp_dim=mlp_dim,
                                  dropout=dropout, num_classes=num_classes)
        if in_channels != 3:
            model.conv_proj = patch_embedding(in_channels, dim, patch_size)
        # torchvision zeroes the classifier (for fine-tuning), which leaves every gradient of an
        # untrained model zero and gradient-based measures blind at initialisation
        nn.init.trunc_normal_(model.heads.head.weight, std=0.02)
        initialise(model, init, default=None, built_with=None, label=cls.name)
        return expose_heads(model)


def patch_embedding(in_channels: int, dim: int, patch_size: int) -> nn.Conv2d:
    """The patch projection for ``in_channels``, initialised as torchvision's (LeCun normal)."""
    conv = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
    fan_in = in_channels * patch_size * patch_size
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(conv.bias)
    return conv


__all__ = ["VitCifar"]
