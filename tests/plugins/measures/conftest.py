"""A tiny float64 network, scoring batches, and importance statistics computed independently of
fp.scoring (plain autograd loops, torch.autograd.functional.hvp) to check each measure against."""
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


@pytest.fixture
def batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64),
             torch.randint(0, 3, (4,), generator=gen)) for _ in range(3)]


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
    per_batch = []
    for x, y in batches:
        loss = F.cross_entropy(net(x) / temperature, y)
        per_batch.append(torch.autograd.grad(loss, params))
    grad = [torch.stack(gs).mean(0) for gs in zip(*per_batch)]
    grad_sq = [torch.stack([g * g for g in gs]).mean(0) for gs in zip(*per_batch)]

    def mean_loss(*values):
        state = dict(zip(names, values))
        losses = [F.cross_entropy(torch.func.functional_call(net, state, (x,)) / temperature, y)
                  for x, y in batches]
        return torch.stack(losses).mean()

    _, hess_grad = torch.autograd.functional.hvp(
        mean_loss, tuple(p.detach() for p in params), tuple(grad))
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
