import copy

import pytest
import torch
import torch.nn.functional as F

from fp.errors import ConfigError
from fp.nn import eval_mode
from fp.scoring import ScoreContext, autotune, hvp, weighted_mean_
from fp.scoring.hvp import choice


def per_batch_grads(model, batches, temperature):
    """∇L_b of every trainable parameter, one plain autograd call per batch, in eval mode."""
    net = copy.deepcopy(model).eval()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    out = []
    for x, y in batches:
        loss = F.cross_entropy(net(x) / temperature, y)
        grads = torch.autograd.grad(loss, [net.get_parameter(n) for n in names])
        out.append(dict(zip(names, grads)))
    return out


def mean_grad_at(model, batches, temperature, shift):
    """∇ of the mean loss over batches at θ + shift."""
    net = copy.deepcopy(model)
    with torch.no_grad():
        for name, delta in shift.items():
            net.get_parameter(name).add_(delta)
    grads = per_batch_grads(net, batches, temperature)
    return {n: torch.stack([g[n] for g in grads]).mean(0) for n in grads[0]}


def finite_difference_hess_grad(model, batches, temperature, direction):
    """(∇L(θ+εv) − ∇L(θ−εv)) / 2ε, with ε giving a step of norm 1e-5."""
    eps = 1e-5 / torch.sqrt(sum((v ** 2).sum() for v in direction.values()))
    plus = mean_grad_at(model, batches, temperature, {n: eps * v for n, v in direction.items()})
    minus = mean_grad_at(model, batches, temperature, {n: -eps * v for n, v in direction.items()})
    return {n: (plus[n] - minus[n]) / (2 * eps) for n in plus}


def test_grad_and_grad_sq_are_batch_means_over_every_trainable_parameter(model, batches):
    ctx = ScoreContext(model, batches, temperature=3.0)
    grads = per_batch_grads(model, batches, 3.0)
    assert set(ctx.grad()) == {n for n, _ in model.named_parameters()}  # BN and biases included
    for name in grads[0]:
        stacked = torch.stack([g[name] for g in grads])
        torch.testing.assert_close(ctx.grad()[name], stacked.mean(0), rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ctx.grad_sq()[name], (stacked ** 2).mean(0),
                                   rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse", "auto"])
def test_hess_grad_matches_central_finite_differences(model, batches, method):
    ctx = ScoreContext(model, batches, temperature=2.0, hvp_method=method)
    expected = finite_difference_hess_grad(model, batches, 2.0, ctx.grad())
    for name, value in expected.items():
        torch.testing.assert_close(ctx.hess_grad()[name], value, rtol=1e-5, atol=1e-9)
    assert ctx.info["hvp_method"] in hvp.METHODS


def test_the_two_hvp_methods_agree(model, batches):
    slow = ScoreContext(model, batches, hvp_method="double_backward").hess_grad()
    fast = ScoreContext(model, batches, hvp_method="forward_over_reverse").hess_grad()
    for name in slow:
        torch.testing.assert_close(slow[name], fast[name], rtol=1e-9, atol=1e-14)


def test_hess_grad_takes_g_over_all_trainable_parameters_not_only_scored_weights(model, batches):
    ctx = ScoreContext(model, batches)
    weights_only = {n: g for n, g in ctx.grad().items() if n in ctx.weights}
    restricted = finite_difference_hess_grad(model, batches, ctx.temperature, weights_only)
    assert not torch.allclose(ctx.hess_grad()["conv1.weight"], restricted["conv1.weight"],
                              rtol=1e-3)


def test_auto_falls_back_to_double_backward_when_forward_mode_fails(model, batches, monkeypatch):
    def unsupported(*args):
        raise RuntimeError("no forward-mode formula")

    monkeypatch.setitem(hvp.HVP_FUNCTIONS, "forward_over_reverse", unsupported)
    # time afresh, not with an earlier test's costs
    monkeypatch.setattr(choice, "COSTS", autotune.Measured())
    ctx = ScoreContext(model, batches, hvp_method="auto")
    reference = ScoreContext(model, batches, hvp_method="double_backward").hess_grad()
    assert all(torch.equal(ctx.hess_grad()[n], reference[n]) for n in reference)
    assert ctx.info["hvp_method"] == "double_backward"
    assert "no forward-mode formula" in ctx.info["hvp_fallback_reason"]


def test_frozen_parameters_have_no_statistics_and_saying_so_names_them(model, batches):
    model.bn1.requires_grad_(False)
    ctx = ScoreContext(model, batches)
    assert "bn1.weight" not in ctx.grad() and "conv1.weight" in ctx.hess_grad()
    with pytest.raises(ConfigError, match="bn1.weight"):
        ctx.grad_sq()["bn1.weight"]


def test_eval_mode_restores_each_submodules_own_mode(model):
    model.train()
    model.bn2.eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model.bn1.training and not model.bn2.training


def test_weighted_mean_in_one_process_divides_by_the_sample_count():
    tensors = [torch.full((3,), 6.0), torch.full((2, 2), 9.0)]
    assert weighted_mean_(tensors, 3) is tensors
    assert torch.equal(tensors[0], torch.full((3,), 2.0))
    assert torch.equal(tensors[1], torch.full((2, 2), 3.0))


def test_a_pass_overwrites_only_gradients_that_are_its_own():
    from fp.scoring.gradients import owned

    p, q = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    shared = torch.autograd.grad((p + q).sum(), [p, q])  # one tensor for both, and expanded
    assert owned(shared, [p, q]) == [False, False]
    fresh = torch.autograd.grad((2 * p + q).pow(2).sum(), [p, q])
    assert owned(fresh, [p, q]) == [True, True]
    assert owned([p.detach(), None], [p, q]) == [False, False]  # a parameter's own memory
    graph = torch.autograd.grad((p * q).pow(2).sum(), [p], create_graph=True)
    assert owned(graph, [p]) == [False]


def test_means_are_the_same_when_the_first_gradients_are_taken_over(model, batches):
    from fp.scoring.gradients import Moments

    batches = [*batches, (batches[0][0][:1], batches[0][1][:1])]  # a short last batch
    params = [p for p in model.parameters()]
    per_batch = [list(g.values()) for g in per_batch_grads(model, batches, 5.0)]
    copies = [[g.clone() for g in grads] for grads in per_batch]
    moments = Moments(params, samples=sum(len(y) for _, y in batches))
    for grads, (_, y) in zip(per_batch, batches):
        moments.add(grads, len(y))
    assert moments.total[0] is per_batch[0][0]  # taken over, not copied
    names = [n for n, _ in model.named_parameters()]
    grad, grad_sq = moments.means(names)
    weights = [len(y) / sum(len(t) for _, t in batches) for _, y in batches]
    for i, name in enumerate(names):
        torch.testing.assert_close(grad[name], sum(w * c[i] for w, c in zip(weights, copies)))
        torch.testing.assert_close(grad_sq[name],
                                   sum(w * c[i] ** 2 for w, c in zip(weights, copies)))
