"""The seed paper's CIFAR models and the small CNN: build, shapes, depth and layer order."""
from __future__ import annotations

import gin
import pytest
import torch
from torch import nn

from fp.errors import ConfigError
from fp_builtins.architectures import fp_register_architectures

from .conftest import count, param_count

OWN = ["vgg13", "mobilenet_v1", "cifar_resnet", "resnet20", "resnet32", "resnet56", "resnet18",
       "resnet34", "small_cnn", "vit_cifar"]


@pytest.mark.parametrize("name", OWN)
def test_forward_and_backward_give_one_logit_per_class(architectures, name):
    model = architectures.build(name, num_classes=7, in_channels=3)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    logits.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", OWN)
def test_single_channel_input_is_read_by_the_stem(architectures, name):
    model = architectures.build(name, num_classes=7, in_channels=1).eval()
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_resnet110_runs_forward(architectures):
    model = architectures.build("resnet110", num_classes=10, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_names_are_unique_and_every_class_has_a_one_line_description(architectures):
    names = [cls.name for cls in fp_register_architectures()]
    assert len(names) == len(set(names))
    assert set(OWN + ["resnet110"]) <= set(names)
    assert all(architectures.describe(name) for name in names)


@pytest.mark.parametrize("depth", [20, 32, 56, 110])
def test_cifar_resnet_has_6n_plus_1_convs_plus_two_projections(architectures, depth):
    model = architectures.build(f"resnet{depth}", num_classes=10, in_channels=3)
    assert count(model, nn.Conv2d) == depth - 1 + 2
    assert count(model, nn.Linear) == 1


def test_resnet56_has_the_usual_size_with_projection_shortcuts(architectures):
    assert 0.85e6 < param_count(architectures.build("resnet56", num_classes=10, in_channels=3)) \
        < 0.86e6


def test_shortcuts_that_change_shape_are_strided_1x1_projections(architectures):
    model = architectures.build("resnet20", num_classes=10, in_channels=3)
    projections = [m.shortcut for m in model.modules() if isinstance(getattr(m, "shortcut", None),
                                                                      nn.Sequential)]
    assert len(projections) == 2
    for projection in projections:
        conv, bn = projection
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
        assert isinstance(bn, nn.BatchNorm2d)


def test_cifar_resnet_depth_is_bindable_and_checked(architectures):
    gin.parse_config("cifar_resnet.depth = 44")
    assert count(architectures.build("cifar_resnet", num_classes=10, in_channels=3),
                 nn.Conv2d) == 43 + 2
    with pytest.raises(ConfigError, match="6n\\+2"):
        architectures.build("cifar_resnet", num_classes=10, in_channels=3, depth=21)


def test_named_resnet_width_is_bindable(architectures):
    gin.parse_config("resnet20.width = 8")
    model = architectures.build("resnet20", num_classes=10, in_channels=3)
    assert model.fc.in_features == 32


@pytest.mark.parametrize("name, convs", [("resnet18", 17 + 3), ("resnet34", 33 + 3)])
def test_resnet18_34_have_a_cifar_stem(architectures, name, convs):
    model = architectures.build(name, num_classes=10, in_channels=3)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((3, 3), (1, 1), 64)
    assert count(model, nn.MaxPool2d) == 0
    assert count(model, nn.Conv2d) == convs
    assert model.fc.in_features == 512


def test_vgg13_blocks_are_conv_relu_bn_with_five_pools_and_one_linear(architectures):
    model = architectures.build("vgg13", num_classes=10, in_channels=3)
    kinds = [type(m) for m in model.features]
    convs = [i for i, kind in enumerate(kinds) if kind is nn.Conv2d]
    assert len(convs) == 10 and kinds.count(nn.MaxPool2d) == 5
    assert all(kinds[i + 1] is nn.ReLU and kinds[i + 2] is nn.BatchNorm2d for i in convs)
    assert [model.features[i].out_channels for i in convs] == \
        [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert count(model, nn.Linear) == 1 and model.fc.in_features == 512


def test_vgg13_rejects_a_bad_layer_entry(architectures):
    with pytest.raises(ConfigError, match="vgg13.layers"):
        architectures.build("vgg13", num_classes=10, in_channels=3, layers=(64, "pool"))


def test_mobilenet_v1_has_a_stride_1_stem_and_13_separable_blocks(architectures):
    model = architectures.build("mobilenet_v1", num_classes=10, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    stem, depthwise = convs[0], [c for c in convs if c.groups > 1]
    assert (stem.out_channels, stem.stride) == (32, (1, 1))
    assert len(convs) == 27 and len(depthwise) == 13
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert sum(c.stride == (2, 2) for c in depthwise) == 4
    assert model.fc.in_features == 1024


def test_mobilenet_v1_width_multiplier_scales_every_layer(architectures):
    model = architectures.build("mobilenet_v1", num_classes=10, in_channels=3,
                                width_multiplier=0.25)
    assert model.fc.in_features == 256


def test_small_cnn_is_small_and_takes_8x8_inputs(architectures):
    model = architectures.build("small_cnn", num_classes=10, in_channels=1)
    assert param_count(model) < 200_000
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == \
        [32, 64, 64, 128]


def test_small_cnn_widths_are_bindable(architectures):
    gin.parse_config("small_cnn.widths = (8, 16)")
    model = architectures.build("small_cnn", num_classes=10, in_channels=1)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 16]
    with pytest.raises(ConfigError, match="small_cnn.widths"):
        architectures.build("small_cnn", num_classes=10, in_channels=1, widths=())


def test_kaiming_fan_out_init_gives_he_convs_and_batchnorm_at_identity(architectures):
    model = architectures.build("resnet18", num_classes=10, in_channels=3,
                                init="kaiming_fan_out")
    conv = model.features.layer4[1].conv2  # 512 * 3 * 3 fan-out: the std estimate is tight
    assert conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
