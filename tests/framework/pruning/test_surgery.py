import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fp
from fp.errors import PruningError
from fp.pruning import (channel_groups, dense_stats, filter_masks, filter_widths, prune_channels,
                        prune_filters, select_channels)
from fp.pruning import groups as groups_module
from fp.pruning.filter_masks import mask_rows
from fp.pruning.surgery import Snapshot


def zero_removed_channels(dense: nn.Module, removed: dict[str, torch.Tensor]) -> nn.Module:
    """The dense model with the removed filters' contributions cut: their conv rows and the
    gamma/beta of the BatchNorm that follows (``<block>.conv`` -> ``<block>.bn``)."""
    zeroed = copy.deepcopy(dense)
    with torch.no_grad():
        for name, idx in removed.items():
            block = zeroed.get_submodule(name.rsplit(".", 2)[0])
            block.conv.weight[idx] = 0
            block.bn.weight[idx] = 0
            block.bn.bias[idx] = 0
    return zeroed


@pytest.mark.parametrize("model_fixture", ["resnet", "concat_net"])
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_pruned_model_computes_what_the_dense_one_does_without_the_removed_channels(
        model_fixture, target, request, images, filter_scores):
    model = request.getfixturevalue(model_fixture)
    dense = copy.deepcopy(model)
    result = prune_filters(model, filter_scores(model), target, example_inputs=images,
                           dense=dense_stats(model, images))
    assert sum(len(i) for i in result.removed.values()) > 0
    with torch.no_grad():
        expected = zero_removed_channels(dense, result.removed)(images)
        assert torch.allclose(model.eval()(images), expected, atol=1e-5)
        assert not torch.allclose(dense(images), expected, atol=1e-3)  # the test can fail


def test_widths_and_removed_indices_are_reported_per_weight(concat_net, images, filter_scores):
    before = filter_widths(concat_net)
    result = prune_filters(concat_net, filter_scores(concat_net), 0.4, example_inputs=images,
                           dense=dense_stats(concat_net, images))
    assert result.widths_before == before
    assert result.widths_after == filter_widths(concat_net)
    for name, width in before.items():
        removed = result.removed.get(name, torch.zeros(0, dtype=torch.long))
        assert result.widths_after[name] == width - len(removed)
        assert torch.equal(removed, removed.unique())  # sorted, no repeats
    # a depthwise conv loses exactly the channels of the conv feeding it
    assert torch.equal(result.removed["expand.conv.weight"], result.removed["dw.conv.weight"])
    # the grouped conv keeps 4 equal groups
    assert result.widths_after["grouped.conv.weight"] % 4 == 0


@pytest.mark.parametrize("model_fixture", ["resnet", "concat_net"])
def test_pruned_model_trains(model_fixture, request, images, filter_scores):
    model = request.getfixturevalue(model_fixture)
    before = sum(p.numel() for p in model.parameters())
    prune_filters(model, filter_scores(model), 0.5, example_inputs=images,
                  dense=dense_stats(model, images))
    model.train()
    loss = F.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) < before


def test_carry_tensors_are_pruned_like_their_parameters(concat_net, images, filter_scores):
    # f(param) pruned must equal f(pruned param) for an elementwise f
    carry = {n: p.detach() * 2 + 1 for n, p in concat_net.named_parameters()}
    groups = channel_groups(concat_net, images)
    selection = {0: [1, 3], len(groups) - 1: groups[-1].slot_channels(2)}
    result = prune_channels(concat_net, groups, selection, carry=carry)
    params = dict(concat_net.named_parameters())
    assert result.carried.keys() == carry.keys()
    changed = 0
    for name, carried in result.carried.items():
        assert torch.equal(carried, params[name].detach() * 2 + 1), name
        changed += carried.shape != carry[name].shape
        assert params[name].grad is None and params[name].requires_grad
    assert changed >= 4


def test_carry_with_real_sgd_momentum(resnet, images, filter_scores):
    optimizer = torch.optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(resnet.train()(images), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    names = {p: n for n, p in resnet.named_parameters()}
    momentum = {names[p]: s["momentum_buffer"] for p, s in optimizer.state.items()}
    before = {n: (p.detach().clone(), momentum[n].clone()) for n, p in resnet.named_parameters()}
    result = prune_filters(resnet, filter_scores(resnet), 0.5, example_inputs=images,
                           dense=dense_stats(resnet, images), carry=momentum)
    name = "blocks.0.a.conv.weight"  # rows are output channels, columns input channels
    kept_rows = [i for i in range(8) if i not in result.removed[name].tolist()]
    kept_cols = [i for i in range(8) if i not in result.removed["stem.conv.weight"].tolist()]
    weight, buffer = (t[kept_rows][:, kept_cols] for t in before[name])
    assert torch.equal(dict(resnet.named_parameters())[name].detach(), weight)
    assert torch.equal(result.carried[name], buffer)


def test_frozen_parameters_stay_frozen(resnet, images, filter_scores):
    resnet.stem.bn.weight.requires_grad_(False)
    prune_filters(resnet, filter_scores(resnet), 0.3, example_inputs=images,
                  dense=dense_stats(resnet, images))
    assert not resnet.stem.bn.weight.requires_grad and resnet.stem.conv.weight.requires_grad


def test_a_carry_tensor_of_the_wrong_shape_is_refused(resnet, images):
    groups = channel_groups(resnet, images)
    with pytest.raises(PruningError, match="stem.conv.weight"):
        prune_channels(resnet, groups, {0: [0]}, carry={"stem.conv.weight": torch.zeros(3)})


class FixedReshapeNet(nn.Module):
    """Hard-codes its channel count in a reshape: tracing works, the pruned forward cannot."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).reshape(x.shape[0], 16 * 8 * 8))


class FixedOffsetNet(nn.Module):
    """Adds a buffer shaped for 8 channels: not a parameter, so torch-pruning leaves it alone."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)
        self.register_buffer("offset", torch.ones(8, 1, 1))

    def forward(self, x):
        return self.fc((self.conv(x) + self.offset).mean((2, 3)))


class UncopyableReshapeNet(FixedReshapeNet):
    """FixedReshapeNet holding a lock, which ``copy.deepcopy`` refuses."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


BREAKING = [FixedReshapeNet, FixedOffsetNet, UncopyableReshapeNet]


@pytest.mark.parametrize("make", BREAKING, ids=lambda cls: cls.__name__)
def test_a_model_whose_surgery_breaks_it_is_refused_untouched(make, images, filter_scores):
    model = make().eval()
    state = copy.deepcopy(model.state_dict())
    params, widths = list(model.parameters()), filter_widths(model)
    with torch.no_grad():
        before = model(images)
    with pytest.raises(PruningError, match=f"{type(model).__name__} cannot be pruned") as info:
        prune_filters(model, filter_scores(model), 0.3, example_inputs=images,
                      dense=dense_stats(model, images))
    assert "\n" not in str(info.value)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert list(model.parameters()) == params and filter_widths(model) == widths
    with torch.no_grad():
        assert torch.equal(model(images), before)  # usable, and the same function


def test_fp_prune_refuses_a_breaking_model_and_leaves_it_working(images):
    model = FixedOffsetNet().eval()
    batches = [(images, torch.tensor([0, 1, 2, 3]))]
    with torch.no_grad():
        before = model(images)
    with pytest.raises(PruningError, match="left as it was"):
        fp.prune(model, "magnitude", batches, 0.3)
    with torch.no_grad():
        assert torch.equal(model(images), before)
    F.cross_entropy(model.train()(images), torch.tensor([0, 1, 2, 3])).backward()


def test_a_snapshot_puts_back_a_pruned_and_masked_model(resnet, images):
    resnet.eval()
    for param in resnet.parameters():
        param.grad = torch.full_like(param, 0.5)
    state = copy.deepcopy(resnet.state_dict())
    params, grads = list(resnet.parameters()), [p.grad for p in resnet.parameters()]
    modules = {name: (type(m), m.__dict__.get("out_channels")) for name, m in resnet.named_modules()}
    with torch.no_grad():
        before = resnet(images)
    snapshot = Snapshot(resnet)
    names = ["blocks.0.b.conv.weight", "blocks.0.b.bn.weight", "blocks.0.b.bn.bias"]
    snapshot.keep_rows(resnet, names, torch.tensor([1, 2]))
    mask_rows(resnet, names, torch.tensor([1, 2]))
    groups = channel_groups(resnet, images)
    prune_channels(resnet, groups, {i: g.slot_channels(0) for i, g in enumerate(groups)})
    assert filter_widths(resnet) != {n: s.shape[0] for n, s in state.items() if n in names}
    snapshot.restore()
    assert list(resnet.parameters()) == params
    assert all(p.grad is g for p, g in zip(resnet.parameters(), grads))
    assert all(torch.equal(state[k], v) for k, v in resnet.state_dict().items())
    assert {n: (type(m), m.__dict__.get("out_channels"))
            for n, m in resnet.named_modules()} == modules
    assert not filter_masks(resnet)
    with torch.no_grad():
        assert torch.equal(resnet(images), before)


@pytest.mark.parametrize("target_type", ["filters", "params", "flops"])
def test_one_prune_event_traces_the_model_once(target_type, resnet, images, filter_scores,
                                               monkeypatch):
    traces = []
    build = groups_module.build_graph
    monkeypatch.setattr(groups_module, "build_graph",
                        lambda *args: traces.append(1) or build(*args))
    prune_filters(resnet, filter_scores(resnet), 0.4, example_inputs=images,
                  dense=dense_stats(resnet, images), target_type=target_type)
    assert len(traces) == 1


def test_dense_statistics_leave_out_flops_when_asked(resnet, images):
    full, lean = dense_stats(resnet, images), dense_stats(resnet, images, flops=False)
    assert "flops" not in lean and {**lean, "flops": full["flops"]} == full


def test_selection_can_be_applied_to_the_groups_it_came_from(resnet, images, filter_scores):
    groups = channel_groups(resnet, images)
    costs = [torch.ones(g.slots) for g in groups]
    selection = select_channels(groups, filter_scores(resnet), 10, costs)
    result = prune_channels(resnet, groups, selection)
    assert sum(len(v) for v in selection.values()) == 10
    assert all(len(result.removed[groups[i].root]) == len(ch) for i, ch in selection.items())
