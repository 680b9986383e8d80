"""A tiny float64 network with BatchNorm state far from its defaults, and its scoring batches."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn


class Tiny(nn.Module):
    """conv→BN→ReLU, then the seed VGG's conv→ReLU→BN, then pool and a linear classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.relu = nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.relu(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def random_batchnorm_state(model: nn.Module) -> nn.Module:
    """Every BatchNorm's statistics and affine parameters far from their defaults, so that eval
    mode (running statistics) and train mode differ and a fold is no identity."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                if bn.weight is not None:
                    bn.weight.uniform_(-1.5, 1.5)
                    bn.bias.uniform_(-0.5, 0.5)
    return model


def make_tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return random_batchnorm_state(Tiny().double())


def make_batches(count: int = 3, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 8, 8, generator=gen).to(dtype),
             torch.randint(0, 3, (4,), generator=gen)) for _ in range(count)]


@pytest.fixture
def model():
    return make_tiny()


@pytest.fixture
def batches():
    return make_batches()


@pytest.fixture
def tiny_factory():
    """(make_tiny, make_batches) for tests that need fresh copies."""
    return make_tiny, make_batches
