import copy

import torch

from fp.plugins.measures.synflow import SynFlow
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
