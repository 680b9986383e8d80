"""torchvision's classifiers as ``torchvision.<model>`` architectures."""
from __future__ import annotations

import inspect

import gin
import pytest
import torch
import torchvision
from torch import nn

from fp.errors import ConfigError
from fp_builtins.architectures._torchvision import torchvision_architectures

from .conftest import param_count


def test_every_classification_model_is_a_documented_class():
    classes = torchvision_architectures()
    names = [cls.name for cls in classes]
    assert {"torchvision.resnet18", "torchvision.mobilenet_v2"} <= set(names)
    assert len(names) == len(torchvision.models.list_models(module=torchvision.models))
    assert not any("fasterrcnn" in name or "deeplab" in name for name in names)
    assert all(inspect.isclass(cls) and cls.__doc__.strip() for cls in classes)


def test_registration_builds_no_model(monkeypatch):
    def refuse(name):
        raise AssertionError(f"{name} was built at registration")

    monkeypatch.setattr(torchvision.models, "get_model_builder", refuse)
    assert torchvision_architectures()


@pytest.mark.parametrize("name", ["torchvision.resnet18", "torchvision.mobilenet_v2"])
def test_single_channel_models_swap_their_first_conv(architectures, name):
    model = architectures.build(name, num_classes=5, in_channels=1)
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 1
    logits = model(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 5)
    logits.sum().backward()


def test_builder_arguments_are_forwarded_and_gin_bindable(architectures):
    full = param_count(architectures.build("torchvision.mobilenet_v2", num_classes=10,
                                           in_channels=3))
    gin.parse_config("torchvision.mobilenet_v2.width_mult = 0.5")
    half = param_count(architectures.build("torchvision.mobilenet_v2", num_classes=10,
                                           in_channels=3))
    assert half < full / 2


def test_pretrained_weights_are_refused(architectures):
    with pytest.raises(ConfigError, match="untrained"):
        architectures.build("torchvision.resnet18", num_classes=10, in_channels=3,
                            weights="IMAGENET1K_V1")


def test_an_argument_the_builder_rejects_is_a_config_error(architectures):
    with pytest.raises(ConfigError, match="torchvision.resnet18"):
        architectures.build("torchvision.resnet18", num_classes=10, in_channels=3, depthh=3)
