"""The first-order and double-backward passes fold an eval-mode BatchNorm into its convolution
exactly where their shortcuts say, and either way give plain autograd's values (float64)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp.scoring.gradients import ScoringLoss, mean_grad_and_sq
from fp.scoring.hvp import filterwise
from fp.scoring.layers import fold
from fp.scoring.layers.double_backward import cheap_double_backward
from fp.scoring.layers.gradient_pass import first_order_layers
from fp.scoring.layers.shortcuts import Shortcuts

from .conftest import random_batchnorm_state


class WideThenNarrow(nn.Module):
    """An early conv→BN at 8×8, a late one on 1×1 maps, then a linear classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))


#: fold the early pair only
EARLY = Shortcuts(fold=frozenset({"conv1"}))


def make_model():
    torch.manual_seed(0)
    return random_batchnorm_state(WideThenNarrow().double().eval())


def loss_and_grads(model, x, y):
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    return loss.detach(), torch.autograd.grad(loss, params)


def test_a_folded_and_an_unfolded_pair_give_plain_autograds_loss_and_gradient(monkeypatch):
    model = make_model()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    expected = loss_and_grads(model, x, y)
    folded = []
    affine = fold.batchnorm_affine
    monkeypatch.setattr(fold, "batchnorm_affine", lambda bn: folded.append(bn) or affine(bn))
    with first_order_layers(model, EARLY):
        got = loss_and_grads(model, x, y)
    assert folded == [model.bn1]
    torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=1e-14)
    for have, want in zip(got[1], expected[1]):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-13)
    assert not any("forward" in vars(m) for m in model.modules())


def test_the_model_gets_its_forwards_back_after_an_error():
    model = make_model()
    with pytest.raises(RuntimeError, match="stop"):
        with first_order_layers(model, Shortcuts(fold=frozenset({"conv1", "conv2"}))):
            assert "forward" in vars(model.conv1) and "forward" in vars(model.bn2)
            raise RuntimeError("stop")
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("shortcuts", [Shortcuts(), EARLY,
                                       Shortcuts(frozenset({"conv1", "conv2"}),
                                                 frozenset({"conv2"}))])
def test_the_first_order_pass_matches_per_batch_autograd_on_every_path(shortcuts):
    model = make_model()
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(n, 3, 8, 8, generator=gen, dtype=torch.float64),
                torch.randint(0, 3, (n,), generator=gen)) for n in (3, 1)]
    grads = [dict(zip([n for n, _ in model.named_parameters()],
                      torch.autograd.grad(F.cross_entropy(model(x) / 5.0, y), model.parameters())))
             for x, y in batches]
    grad, grad_sq = mean_grad_and_sq(model, batches, 5.0, shortcuts=shortcuts)
    for name in grad:
        mean = (3 * grads[0][name] + grads[1][name]) / 4
        mean_sq = (3 * grads[0][name] ** 2 + grads[1][name] ** 2) / 4
        torch.testing.assert_close(grad[name], mean, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(grad_sq[name], mean_sq, rtol=1e-10, atol=1e-13)


def reference_filter_hess_grad(model, batches, temperature):
    """Σ_{i∈p} θ_i (Hg)_i per filter of every conv/linear weight, by plain autograd: Hg = ∇(ḡᵀg),
    g the sample-weighted mean gradient and ḡ it detached."""
    params = dict(model.named_parameters())
    total = sum(len(y) for _, y in batches)
    loss = sum(F.cross_entropy(model(x) / temperature, y) * len(y) for x, y in batches) / total
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    dot = sum((g * g.detach()).sum() for g in grads)
    hess_grad = dict(zip(params, torch.autograd.grad(dot, list(params.values()))))
    return {n: (params[n].detach() * hess_grad[n]).flatten(1).sum(1)
            for n in ("conv1.weight", "conv2.weight", "fc.weight")}


def test_filter_wise_hg_corrects_for_exactly_the_pairs_it_folded(monkeypatch):
    model = make_model()
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(n, 3, 8, 8, generator=gen, dtype=torch.float64),
                torch.randint(0, 3, (n,), generator=gen)) for n in (4, 2)]
    made = []
    monkeypatch.setattr(filterwise, "Folds",
                        lambda *args: made.append(fold.Folds(*args)) or made[-1])
    weights = {n: model.get_parameter(n) for n in ("conv1.weight", "conv2.weight", "fc.weight")}
    found = filterwise.mean_filter_hess_grad(ScoringLoss.of(model, batches, 200.0, EARLY), weights,
                                             method="double_backward")
    dots = found.found
    assert found.info["hvp_method"] == "double_backward" and found.info["hvp_kept"] == "2/2"
    assert made[0].folded() == {"conv1": "bn1"} and made[0].pairs == {"conv1": "bn1",
                                                                      "conv2": "bn2"}
    expected = reference_filter_hess_grad(model, batches, 200.0)
    for name, want in expected.items():
        torch.testing.assert_close(dots[name], want, rtol=1e-8, atol=1e-12)


def test_the_cheap_double_backward_layers_match_plain_autograd_on_both_paths():
    model = make_model()
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    params = list(model.parameters())
    vec = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]

    def grad_and_hvp():
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)
        return [g.detach() for g in grads] + list(hv)

    expected = grad_and_hvp()
    folds = fold.Folds(model, EARLY)
    with cheap_double_backward(model, folds=folds):
        got = grad_and_hvp()
    assert folds.folded() == {"conv1": "bn1"}
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-13)
