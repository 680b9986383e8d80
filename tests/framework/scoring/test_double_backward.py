"""The cheap-double-backward layers compute the same loss, gradient and Hessian-vector product as
the layers they stand in for (float64, against plain autograd), and leave the model as it was."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp.scoring.layers.fold import foldable_pairs
from fp.scoring.layers.double_backward import cheap_double_backward

from .conftest import random_batchnorm_state


def loss_grad_hvp(model, x, y, vec_seed=5):
    """Loss, ∇L and H v (v fixed by ``vec_seed``), reverse over reverse with whatever layers the
    model has at the moment."""
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(vec_seed)
    vec = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)
    return loss.detach(), [g.detach() for g in grads], hv


def assert_same_derivatives(model, x, y):
    model.eval()
    expected = loss_grad_hvp(model, x, y)
    with cheap_double_backward(model):
        got = loss_grad_hvp(model, x, y)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-14)
    for want, have in zip(expected[1] + list(expected[2]), got[1] + list(got[2])):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-13)


def test_tiny_model_folded_and_unfolded_batchnorms(model, batches):
    # conv1→bn1 folds (conv1 has a bias too); conv2→ReLU→bn2 keeps bn2 as an affine map
    assert foldable_pairs(model.eval()) == {"conv1": "bn1"}
    x, y = batches[0]
    assert_same_derivatives(model, x, y)


class Strided1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=True)
        self.bn = nn.BatchNorm1d(6, affine=False)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.bn(self.conv(x))).mean(-1))


class Volumetric(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 2, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(3)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(F.softplus(self.bn(self.conv(x))).mean((2, 3, 4)))


class TwoConsumers(nn.Module):
    """The depthwise conv's output feeds its BatchNorm and a skip connection: nothing folds."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.same = nn.Conv2d(4, 4, 3, padding="same")   # left to its own forward
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.depthwise(torch.relu(self.stem(x)))
        h = torch.relu(self.bn(h)) + h
        return self.fc(torch.relu(self.same(h)).mean((2, 3)))


@pytest.mark.parametrize("make, shape", [(Strided1d, (5, 4, 11)), (Volumetric, (5, 2, 3, 4, 4)),
                                         (TwoConsumers, (5, 3, 6, 6))])
def test_other_geometries_and_graph_shapes(make, shape):
    torch.manual_seed(0)
    model = random_batchnorm_state(make().double())
    x = torch.randn(*shape, dtype=torch.float64)
    y = torch.randint(0, 3, (shape[0],))
    assert_same_derivatives(model, x, y)


def test_only_an_only_consumer_in_eval_mode_folds():
    torch.manual_seed(0)
    model = TwoConsumers().double().eval()
    assert foldable_pairs(model) == {}
    resnet_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert foldable_pairs(resnet_like.eval()) == {"0": "1"}
    assert foldable_pairs(resnet_like.train()) == {}  # batch statistics are no fixed affine map


def test_the_model_gets_its_own_forwards_back_even_after_an_error(model, batches):
    model.eval()
    with pytest.raises(RuntimeError, match="stop"):
        with cheap_double_backward(model):
            assert "forward" in vars(model.conv1) and "forward" in vars(model.bn2)
            raise RuntimeError("stop")
    assert not any("forward" in vars(m) for m in model.modules())


def test_an_instance_forward_set_by_someone_else_is_kept(model, batches):
    model.eval()
    mine = model.bn2.forward = lambda x: x * 2
    with cheap_double_backward(model):
        assert model.bn2.forward is mine
    assert model.bn2.forward is mine


def test_a_pair_with_a_forward_set_by_someone_else_is_not_folded(model, batches):
    model.eval()
    model.conv1.forward = lambda x: nn.Conv2d.forward(model.conv1, x) * 2
    assert foldable_pairs(model) == {}
    x, y = batches[0]
    expected = model(x)
    with cheap_double_backward(model):  # bn1 must still run: conv1 is left to its own forward
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-14)


class HardActivations(nn.Module):
    """MobileNetV3's activations: Hardswish after a convolution, a Hardsigmoid gate."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 6, 3, padding=1), nn.Hardswish()
        self.squeeze, self.gate = nn.Conv2d(6, 6, 1), nn.Hardsigmoid()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = x * self.gate(self.squeeze(F.adaptive_avg_pool2d(x, 1)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_hardswish_and_hardsigmoid_get_an_exact_hessian_vector_product():
    torch.manual_seed(3)
    model = HardActivations().double().eval()
    x = 2 * torch.randn(5, 3, 6, 6, dtype=torch.float64)  # across the kinks at ±3
    y = torch.randint(0, 3, (5,))
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        loss_grad_hvp(model, x, y)  # torch's own layers have no double backward
    with cheap_double_backward(model):
        loss, grads, hv = loss_grad_hvp(model, x, y)
    assert "forward" not in vars(model.act) and "forward" not in vars(model.gate)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(5)  # the v loss_grad_hvp draws
    vec = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    eps = 1e-6

    def grad_at(sign):
        with torch.no_grad():
            for p, v in zip(params, vec):
                p.add_(sign * eps * v)
        found = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        with torch.no_grad():
            for p, v in zip(params, vec):
                p.sub_(sign * eps * v)
        return found
    plus, minus = grad_at(1.0), grad_at(-1.0)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y).detach(), rtol=1e-12, atol=0)
    for got, p_, m_ in zip(hv, plus, minus):
        torch.testing.assert_close(got, (p_ - m_) / (2 * eps), rtol=1e-6, atol=1e-8)
