"""Convolutions whose weight gradient is taken as one matrix product (the "matmul" exact
shortcut): the same ∂W as aten's kernel, and the same g, E[g²] and Hg through scoring passes that
take it (checked against float64 autograd and finite differences)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp.scoring import ScoreContext
from fp.scoring.layers.conv import Geometry

from .test_gradients import finite_difference_hess_grad, per_batch_grads
from .conftest import random_batchnorm_state


class Late(nn.Module):
    """A stem at 4×4, then convolutions on 2×2 and 1×1 maps; one with a BatchNorm, one strided,
    one with a bias."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.wide = nn.Conv2d(4, 12, 3, padding=1, bias=False)     # 2×2 map: N·4 ≤ 12
        self.bn1 = nn.BatchNorm2d(12)
        self.down = nn.Conv2d(12, 16, 3, stride=2, padding=1)      # 1×1 map, with a bias
        self.last = nn.Conv2d(16, 16, (3, 1), padding=(1, 0), bias=False)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.wide(F.max_pool2d(x, 2))))
        x = F.relu(self.last(F.relu(self.down(x))))
        return self.fc(x.flatten(1))


@pytest.fixture
def late():
    torch.manual_seed(4)
    return random_batchnorm_state(Late().double()).eval()


def make_late_batches(sizes=(3, 2, 3)):
    gen = torch.Generator().manual_seed(5)
    return [(torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64),
             torch.randint(0, 3, (n,), generator=gen)) for n in sizes]


@pytest.fixture
def late_batches():  # unequal sizes
    return make_late_batches()


@pytest.fixture
def matmuls(monkeypatch):
    """Counts the weight gradients taken as matrix products."""
    calls = []
    real = Geometry._matmul_weight_grad

    def counted(self, grad_out, x, weight):
        calls.append(tuple(weight.shape))
        return real(self, grad_out, x, weight)
    monkeypatch.setattr(Geometry, "_matmul_weight_grad", counted)
    return calls


@pytest.mark.parametrize("stride, padding, dilation, kernel", [
    (1, 1, 1, (3, 3)), (2, 1, 1, (3, 3)), (1, 0, 1, (1, 1)), (1, 2, 2, (3, 3)), (2, 0, 1, (2, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_matrix_product_gives_atens_weight_gradient(stride, padding, dilation, kernel,
                                                         channels_last):
    geometry = Geometry((stride, stride), (padding, padding), (dilation, dilation), 1).matmul()
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(24, 5, *kernel, dtype=torch.float64)
    grad_out = torch.randn(geometry.output_shape(x, weight), dtype=torch.float64)
    assert tuple(grad_out.shape) == tuple(geometry.convolve(x, weight).shape)
    found = geometry.backward(grad_out, x, weight, (True, True, True))
    expected = torch.ops.aten.convolution_backward(
        grad_out, x, weight, [24], [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], 1,
        [True, True, True])
    for got, want in zip(found, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert geometry.backward(grad_out, x, weight, (False, True, False))[::2] == (None, None)


def test_only_a_geometry_that_says_so_and_an_ungrouped_2d_convolution_take_the_product(
        matmuls):
    x, grad_out = torch.randn(2, 4, 2, 2), torch.randn(2, 8, 2, 2)
    plain = Geometry((1, 1), (1, 1), (1, 1), 1)
    plain.backward(grad_out, x, torch.randn(8, 4, 3, 3), (False, True, False))
    grouped = Geometry((1, 1), (1, 1), (1, 1), 2).matmul()
    grouped.backward(grad_out, x, torch.randn(8, 2, 3, 3), (False, True, False))
    one_d = Geometry((1,), (1,), (1,), 1).matmul()
    one_d.backward(torch.randn(2, 8, 2), torch.randn(2, 4, 2), torch.randn(8, 4, 3),
                   (False, True, False))
    assert matmuls == []
    plain.matmul().backward(grad_out, x, torch.randn(8, 4, 3, 3), (False, True, False))
    assert matmuls == [(8, 4, 3, 3)]


def test_g_and_g_sq_through_matrix_product_layers_match_autograd(late, late_batches, matmuls):
    ctx = ScoreContext(late, late_batches, temperature=3.0, shortcuts="on")
    grads = per_batch_grads(late, late_batches, 3.0)
    weights = torch.tensor([len(y) for _, y in late_batches], dtype=torch.float64)
    weights = weights / weights.sum()
    for name in grads[0]:
        stacked = torch.stack([g[name] for g in grads])
        shape = (-1, *[1] * (stacked.dim() - 1))
        torch.testing.assert_close(ctx.grad()[name], (weights.view(shape) * stacked).sum(0),
                                   rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ctx.grad_sq()[name],
                                   (weights.view(shape) * stacked ** 2).sum(0),
                                   rtol=1e-10, atol=1e-16)
    assert {(4, 3, 3, 3), (12, 4, 3, 3), (16, 12, 3, 3), (16, 16, 3, 1)} == set(matmuls)
    assert ctx.info["scoring_matmul"] == ["down", "last", "stem", "wide"]


@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse"])
def test_hess_grad_through_matrix_product_layers_matches_finite_differences(late, matmuls,
                                                                          method):
    late_batches = make_late_batches((3, 3, 3))  # the finite differences weigh batches alike
    ctx = ScoreContext(late, late_batches, temperature=2.0, hvp_method=method, shortcuts="on")
    expected = finite_difference_hess_grad(late, late_batches, 2.0, ctx.grad())
    for name, value in expected.items():
        torch.testing.assert_close(ctx.hess_grad()[name], value, rtol=1e-5, atol=1e-9)
    filters = ctx.filter_hess_grad()
    for name, weight in ctx.weights.items():
        dots = (weight.detach() * expected[name]).flatten(1).sum(1)
        torch.testing.assert_close(filters[name], dots, rtol=1e-5, atol=1e-9)
    assert matmuls
