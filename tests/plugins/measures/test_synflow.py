import copy

import torch

from fp_builtins.measures.synflow import SynFlow
from fp.scoring import ScoreContext, score


def reference_synflow(model, input_shape):
    """Tanaka et al.'s recipe written out: |state| in float64, eval mode, all-ones input."""
    net = copy.deepcopy(model).double().eval()
    state = {k: v.abs() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    flow = net(torch.ones(1, *input_shape, dtype=torch.float64)).sum()
    names = ["conv1.weight", "conv2.weight", "fc.weight"]
    grads = torch.autograd.grad(flow, [net.get_parameter(n) for n in names])
    return {n: (net.get_parameter(n) * g).abs().detach() for n, g in zip(names, grads)}


def test_synflow_matches_the_linearised_network(model, scores, close, filter_sum):
    expected = reference_synflow(model, (3, 8, 8))
    close(scores("synflow", "weight"), expected)
    close(scores("synflow", "filter"), {n: filter_sum(s) for n, s in expected.items()})


def test_synflow_is_data_free_and_leaves_the_model_alone(model, batches):
    before = copy.deepcopy(model.state_dict())
    other_batches = [(x * 7 + 3, (y + 1) % 3) for x, y in batches]
    with_data = score(model, SynFlow(), batches)
    with_other = score(model, SynFlow(), other_batches)
    without = score(model, SynFlow(), None, ctx=ScoreContext(model, None, input_shape=(3, 8, 8)))
    for name in with_data:
        assert torch.equal(with_data[name], with_other[name])
        assert torch.equal(with_data[name], without[name])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float64


def test_synflow_without_an_input_shape_says_what_it_needs(model):
    import pytest

    from fp.errors import DataError

    with pytest.raises(DataError, match="input shape"):
        score(model, SynFlow(), None)


def test_synflow_equals_the_deep_copied_linearised_network_in_float64(model):
    ctx = ScoreContext(model, None, input_shape=(3, 8, 8))
    expected = reference_synflow(model, (3, 8, 8))
    actual = SynFlow()(ctx)
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name].dtype == torch.float64
        torch.testing.assert_close(actual[name], value, rtol=1e-12, atol=0)


def test_synflow_of_a_float32_model_in_training_mode_changes_nothing_about_it(model):
    model = model.float().train()
    model.bn1.eval()  # mixed modes must come back exactly as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    expected = reference_synflow(model, (3, 8, 8))
    actual = SynFlow()(ScoreContext(model, None, input_shape=(3, 8, 8)))
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-12, atol=0)
    state = model.state_dict()
    assert all(torch.equal(before[k], v) and before[k].dtype == v.dtype for k, v in state.items())
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
