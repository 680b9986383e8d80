"""Which BatchNorm normalises a layer's output channels, read off the model's fx graph."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fp.errors import ConfigError
from fp.scoring import ScoreContext
from fp.scoring.graph import following_batchnorms

X = torch.randn(2, 3, 8, 8)


def following(model, batches=((X, torch.zeros(2, dtype=torch.long)),)):
    ctx = ScoreContext(model, batches)
    return {name: ctx.following_bn_name(name) for name in ctx.weights}


def vgg_block():
    """The seed VGG-13's order: conv → ReLU → BN; then a linear classifier."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


class Residual(nn.Module):
    """conv1→BN (plain), conv2 whose output is added to the input before a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn_after_add = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv3, self.bn3 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn_after_add(self.conv2(x) + x)
        y = self.conv3(x)
        return self.bn3(y) + y  # a second consumer: the BatchNorm does not own these channels


class Untraceable(nn.Module):
    """Data-dependent control flow, which torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.bn = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)
        self.fc, self.bn_fc, self.head = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        x = self.bn(self.act(self.conv(x))).mean((2, 3))
        return self.head(self.bn_fc(self.fc(x)))


def test_conv_then_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert following(model) == {"0.weight": "1"}


def test_conv_relu_batchnorm_and_a_classifier_without_one():
    assert following(vgg_block()) == {"0.weight": "2", "5.weight": None}


def test_functional_activations_pass_and_linear_feeds_batchnorm1d():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(5, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            return self.bn(torch.sigmoid(F.dropout(self.fc(x), 0.1, self.training)))

    assert following(Net(), [(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))]) == {
        "fc.weight": "bn"}


def test_adds_and_second_consumers_end_the_walk():
    assert following(Residual()) == {"conv1.weight": "bn1", "conv2.weight": None,
                                     "conv3.weight": None}


@pytest.mark.parametrize("with_input", [True, False])
def test_untraceable_models_fall_back_to_module_order(with_input):
    batches = [(X, torch.zeros(2, dtype=torch.long))] if with_input else None
    assert following(Untraceable(), batches) == {"conv.weight": "bn", "fc.weight": "bn_fc",
                                                 "head.weight": None}


def test_a_batchnorm_over_other_channels_does_not_count():
    class Flattened(Untraceable):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(7)  # registered after conv, but not over conv's 4 channels

        def forward(self, x):
            if x.sum() > 0:
                x = -x
            return self.head(self.bn_fc(self.fc(self.conv(x).mean((2, 3)))))

    found = following(Flattened(), batches=None)  # registration order: conv, act, bn, fc, ...
    assert found["conv.weight"] is None and found["fc.weight"] == "bn_fc"


def test_following_bn_returns_the_module_and_rejects_unknown_weights():
    model = vgg_block()
    ctx = ScoreContext(model, None)
    assert ctx.following_bn("0.weight") is model[2]
    assert ctx.following_bn("5.weight") is None
    with pytest.raises(ConfigError, match="2.weight"):
        ctx.following_bn("2.weight")


class ScaledConv(nn.Module):
    """A layer of its own with a weight: fx traces through it, so it is no call of the graph."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight * 2)


def test_a_layer_the_trace_goes_through_falls_back_to_module_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scaled, self.bn = ScaledConv(), nn.BatchNorm2d(4)
            self.conv, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
            self.unused = nn.Conv2d(4, 4, 1)  # never called: no BatchNorm follows it

        def forward(self, x):
            return self.bn2(self.conv(self.bn(self.scaled(x))))

    found = following_batchnorms(Net(), ["scaled.weight", "conv.weight", "unused.weight"])
    assert found == {"scaled.weight": "bn", "conv.weight": "bn2", "unused.weight": None}
