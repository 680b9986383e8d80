"""One fx trace per model, remembered while its structure stays the same, read both by
following_batchnorms and by foldable_pairs."""
import gc
import weakref

import pytest
import torch
from torch import nn

from fp.scoring import graph
from fp.scoring.layers.fold import foldable_pairs


def conv_relu_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def conv_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


class DataDependent(nn.Module):
    """fx cannot trace the branch on the input's values."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(-x if x.sum() > 0 else x))


@pytest.fixture
def traces(monkeypatch):
    """The list of models traced so far, by every call to the tracer."""
    traced = []
    real = graph._trace

    def counting(model):
        traced.append(model)
        return real(model)

    monkeypatch.setattr(graph, "_trace", counting)
    return traced


WEIGHTS = ["0.weight", "5.weight"]


def test_a_second_call_on_the_same_model_reuses_the_trace(traces):
    model = conv_relu_bn()
    first = graph.following_batchnorms(model, WEIGHTS)
    second = graph.following_batchnorms(model, WEIGHTS)
    assert first == second == {"0.weight": "2", "5.weight": None}
    assert traces == [model]


def test_another_model_is_traced_afresh_and_other_weights_reuse_the_trace(traces):
    model, twin = conv_relu_bn(), conv_relu_bn()
    graph.following_batchnorms(model, WEIGHTS)
    assert graph.following_batchnorms(twin, WEIGHTS) == {"0.weight": "2", "5.weight": None}
    assert graph.following_batchnorms(model, ["0.weight"]) == {"0.weight": "2"}
    assert traces == [model, twin]


def test_folding_and_the_following_batchnorm_read_one_trace(traces):
    model = conv_bn().eval()
    assert foldable_pairs(model) == {"0": "1"}
    assert graph.following_batchnorms(model, WEIGHTS) == {"0.weight": "1", "5.weight": None}
    assert foldable_pairs(model) == {"0": "1"}
    assert traces == [model]


def test_what_folding_reads_off_the_modules_is_read_afresh(traces):
    model = conv_bn().eval()
    assert foldable_pairs(model) == {"0": "1"}
    model[1].weight.requires_grad_(True)
    model[1].bias.requires_grad_(False)  # a trainable γ without a trainable β does not fold
    assert foldable_pairs(model) == {}
    assert traces == [model]
    model[1].bias.requires_grad_(True)
    model.train()  # another mode may trace differently: traced afresh
    assert foldable_pairs(model) == {}
    assert traces == [model, model]


def test_shapes_changed_in_place_are_traced_afresh(traces):
    model = conv_relu_bn()
    graph.following_batchnorms(model, WEIGHTS)
    with torch.no_grad():  # what channel surgery does: narrower tensors on the same modules
        model[0].weight = nn.Parameter(model[0].weight[:3].clone())
        model[0].bias = nn.Parameter(model[0].bias[:3].clone())
    assert graph.following_batchnorms(model, WEIGHTS) == {"0.weight": None, "5.weight": None}
    assert traces == [model, model]


def test_a_swapped_submodule_changes_the_answer():
    model = conv_relu_bn()
    assert graph.following_batchnorms(model, WEIGHTS)["0.weight"] == "2"
    model[1] = nn.MaxPool2d(1)  # not elementwise: the conv no longer feeds the BatchNorm alone
    assert graph.following_batchnorms(model, WEIGHTS)["0.weight"] is None


def test_an_untraceable_model_is_tried_once_and_still_uses_its_example_input(traces):
    model = DataDependent()
    x = torch.randn(1, 3, 6, 6)
    assert graph.following_batchnorms(model, ["conv.weight"], x) == {"conv.weight": "bn"}
    assert graph.following_batchnorms(model, ["conv.weight"]) == {"conv.weight": "bn"}
    assert foldable_pairs(model.eval()) == {}
    assert traces == [model, model]  # once more for eval mode


def test_the_cache_does_not_keep_a_model_alive():
    model = conv_relu_bn()
    graph.following_batchnorms(model, WEIGHTS)
    foldable_pairs(model.eval())
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
