"""The fx trace behind following_batchnorms is remembered per model and structure."""
import gc
import weakref

import pytest
import torch
from torch import nn

from fp.scoring import graph as topology


def conv_relu_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
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
    real = topology._by_tracing

    def counting(model, owners):
        traced.append(model)
        return real(model, owners)

    monkeypatch.setattr(topology, "_by_tracing", counting)
    return traced


WEIGHTS = ["0.weight", "5.weight"]


def test_a_second_call_on_the_same_model_reuses_the_trace(traces):
    model = conv_relu_bn()
    first = topology.following_batchnorms(model, WEIGHTS)
    second = topology.following_batchnorms(model, WEIGHTS)
    assert first == second == {"0.weight": "2", "5.weight": None}
    assert traces == [model]


def test_another_model_or_other_weights_are_traced_afresh(traces):
    model, twin = conv_relu_bn(), conv_relu_bn()
    topology.following_batchnorms(model, WEIGHTS)
    assert topology.following_batchnorms(twin, WEIGHTS) == {"0.weight": "2", "5.weight": None}
    assert topology.following_batchnorms(model, ["0.weight"]) == {"0.weight": "2"}
    assert traces == [model, twin, model]
    topology.following_batchnorms(model, WEIGHTS)  # both sets of layers are remembered
    topology.following_batchnorms(model, ["0.weight"])
    assert traces == [model, twin, model]


def test_shapes_changed_in_place_are_traced_afresh(traces):
    model = conv_relu_bn()
    topology.following_batchnorms(model, WEIGHTS)
    with torch.no_grad():  # what channel surgery does: narrower tensors on the same modules
        model[0].weight = nn.Parameter(model[0].weight[:3].clone())
        model[0].bias = nn.Parameter(model[0].bias[:3].clone())
    assert topology.following_batchnorms(model, WEIGHTS) == {"0.weight": None, "5.weight": None}
    assert traces == [model, model]


def test_a_swapped_submodule_changes_the_answer():
    model = conv_relu_bn()
    assert topology.following_batchnorms(model, WEIGHTS)["0.weight"] == "2"
    model[1] = nn.MaxPool2d(1)  # not elementwise: the conv no longer feeds the BatchNorm alone
    assert topology.following_batchnorms(model, WEIGHTS)["0.weight"] is None


def test_an_untraceable_model_is_tried_once_and_still_uses_its_example_input(traces):
    model = DataDependent()
    x = torch.randn(1, 3, 6, 6)
    assert topology.following_batchnorms(model, ["conv.weight"], x) == {"conv.weight": "bn"}
    assert topology.following_batchnorms(model, ["conv.weight"]) == {"conv.weight": "bn"}
    assert traces == [model]


def test_the_cache_does_not_keep_a_model_alive():
    model = conv_relu_bn()
    topology.following_batchnorms(model, WEIGHTS)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
