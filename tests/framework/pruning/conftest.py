"""Tiny models for the pruning tests: a CIFAR-style residual net and a net with an inverted
residual (depthwise conv), a concatenation and a grouped conv. Every conv is followed by its own
BatchNorm, named ``<block>.conv`` / ``<block>.bn``, so a test can find the BN of a pruned conv."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.a, self.b = ConvBN(cin, cout, 3, stride), ConvBN(cout, cout)
        self.shortcut = ConvBN(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.b(F.relu(self.a(x))) + skip)


class TinyResNet(nn.Module):
    """resnet20-like: identity and projection shortcuts, a linear classifier."""

    name = "test_tiny_resnet"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8):
        super().__init__()
        w = width
        self.stem = ConvBN(in_channels, w)
        self.blocks = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1),
                                    BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConcatDepthwiseNet(nn.Module):
    """Inverted residual with a depthwise conv, a two-branch concat, a grouped conv (4 groups)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = ConvBN(3, 16)
        self.expand, self.project = ConvBN(16, 32, 1), ConvBN(32, 16, 1)
        self.dw = ConvBN(32, 32, 3, groups=32)
        self.left, self.right = ConvBN(16, 8, 1), ConvBN(16, 12, 3)
        self.fuse = ConvBN(20, 24, 1)
        self.grouped = ConvBN(24, 24, 3, groups=4)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.project(F.relu(self.dw(F.relu(self.expand(x)))))
        x = torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1)
        x = F.relu(self.grouped(F.relu(self.fuse(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so zeroed channels matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


class RandomScores(fp.Measure):
    """Uniform random weight scores from a fixed seed (the tests' stand-in for a real measure)."""

    name = "test_random_scores"
    needs_data = False

    def __call__(self, ctx):
        gen = torch.Generator().manual_seed(0)
        return {n: torch.rand(w.shape, generator=gen).to(w.device) for n, w in ctx.weights.items()}


class TinyArchitecturesPlugin:
    """A test-only plugin registering the tiny residual net as an architecture."""

    @staticmethod
    @fp.hookimpl
    def fp_register_architectures():
        return [TinyResNet]


@pytest.fixture
def images():
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def resnet():
    return randomized(TinyResNet())


@pytest.fixture
def concat_net():
    return randomized(ConcatDepthwiseNet())


@pytest.fixture
def arch_manager():
    return fp.make_manager(autoload=False, plugins=(TinyArchitecturesPlugin,))


@pytest.fixture
def random_measure():
    return RandomScores()


def random_filter_scores(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    from fp.pruning import filter_widths

    gen = torch.Generator().manual_seed(seed)
    return {name: torch.rand(width, generator=gen) for name, width in filter_widths(model).items()}


@pytest.fixture
def filter_scores():
    return random_filter_scores
