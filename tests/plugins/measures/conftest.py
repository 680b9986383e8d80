"""A tiny float64 network, scoring batches (equal and unequal in size), and importance statistics
computed independently of fp.scoring (plain autograd on the stock layers) from their definitions,
means over samples: with N = Σ_b n_b, g = Σ_b n_b ∇L_b / N, E[g²] = Σ_b n_b (∇L_b)² / N and
Hg = ∇(ḡᵀg) = H g, H the Hessian of the loss summed over every sample, over N."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp
from fp.scoring import score

WEIGHTS = ["conv1.weight", "conv2.weight", "fc.weight"]
FOLLOWING_BN = {"conv1.weight": "bn1", "conv2.weight": "bn2"}  # fc has none


class Tiny(nn.Module):
    """conv→BN→ReLU, then the seed VGG's conv→ReLU→BN, then pool and a linear classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(torch.relu(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def make_tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny().double()
    with torch.no_grad():  # BatchNorm state far from its defaults, so eval and train mode differ
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model


@pytest.fixture
def model():
    return make_tiny()


@pytest.fixture
def weights(model):
    """The scored weights, detached: conv1, conv2 and the classifier."""
    return {name: model.get_parameter(name).detach().clone() for name in WEIGHTS}


def make_batches(sizes, seed: int = 1, shape=(3, 8, 8), classes: int = 3):
    """float64 batches of the given sizes (inputs, targets in [0, classes))."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, *shape, generator=gen, dtype=torch.float64),
             torch.randint(0, classes, (n,), generator=gen)) for n in sizes]


@pytest.fixture(params=[(4, 4, 4), (5, 3)], ids=["equal", "unequal"])
def batches(request):
    """Three equal batches, or two unequal ones (where a mean over batches is not over samples)."""
    return make_batches(request.param)


@pytest.fixture(scope="session")
def manager():
    return fp.make_manager()


@pytest.fixture
def scores(model, batches, manager):
    """scores(measure, granularity, **kwargs): fp.scoring.score on the tiny model."""
    def run(measure, granularity, **kwargs):
        return score(model, measure, batches, granularity=granularity, manager=manager, **kwargs)
    return run


def reference_stats(model: nn.Module, batches, temperature: float) -> dict[str, dict]:
    """g, E[g²] and Hg over all trainable parameters, eval mode, written out longhand."""
    net = copy.deepcopy(model).eval()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = [net.get_parameter(n) for n in names]
    sizes = torch.tensor([float(len(y)) for _, y in batches], dtype=torch.float64)
    share = sizes / sizes.sum()  # n_b / N
    per_batch = [torch.autograd.grad(F.cross_entropy(net(x) / temperature, y), params)
                 for x, y in batches]

    def weighted(values):  # Σ_b (n_b / N) v_b
        return sum(s * v for s, v in zip(share, values))

    grad = [weighted(gs) for gs in zip(*per_batch)]
    grad_sq = [weighted([g * g for g in gs]) for gs in zip(*per_batch)]
    # H g of the loss summed over every sample, over N: one double backward of the whole sum
    total = sum(F.cross_entropy(net(x) / temperature, y, reduction="sum") for x, y in batches)
    first = torch.autograd.grad(total / sizes.sum(), params, create_graph=True)
    hess_grad = torch.autograd.grad(sum((d * g).sum() for d, g in zip(first, grad)), params)
    return {"grad": dict(zip(names, grad)), "grad_sq": dict(zip(names, grad_sq)),
            "hess_grad": dict(zip(names, hess_grad))}


@pytest.fixture
def reference(model, batches):
    """reference(T) -> {"grad": ..., "grad_sq": ..., "hess_grad": ...} by parameter name."""
    return lambda temperature: reference_stats(model, batches, temperature)


def per_filter_sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


@pytest.fixture
def filter_sum():
    return per_filter_sum


@pytest.fixture
def close():
    """close(actual_dict, expected_dict): same keys, equal within float32 rounding."""
    def check(actual, expected):
        assert set(actual) == set(expected)
        for name, value in expected.items():
            assert actual[name].dtype == torch.float32
            torch.testing.assert_close(actual[name], value.float(), rtol=1e-5, atol=1e-9)
    return check


@pytest.fixture
def following_bn():
    """Scored weight → the BatchNorm that normalises its output channels."""
    return dict(FOLLOWING_BN)
