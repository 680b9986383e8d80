"""Every torchvision classification model as an architecture named ``torchvision.<model>``.

Registration only creates one small class per model name (no model is built until it is used),
and models are always built untrained: fp never downloads weights. ``init`` None keeps
torchvision's own initialisation (``fp_builtins.architectures._layers`` describes the schemes). A
model with ``nn.MultiheadAttention`` (the ViTs) gets ``HeadAttention`` in its place, the same
weights and function with a ``qkv`` Linear, so that fp scores and prunes its heads.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from fp.errors import ConfigError
from fp.attention import expose_heads
from fp_builtins.architectures._layers import Init, init_weights, initialise

PREFIX = "torchvision."


def torchvision_architectures() -> list[type]:
    """One architecture class per model in ``torchvision.models.list_models(torchvision.models)``
    (the classification models; detection, segmentation and video live in submodules)."""
    import torchvision

    return [architecture_class(model) for model in
            torchvision.models.list_models(module=torchvision.models)]


def architecture_class(model: str) -> type:
    """A class whose construction builds torchvision's ``model``; a class, not a function, because
    the registry and gin expect classes with a ``name`` and a docstring."""

    def __new__(cls, num_classes: int = 1000, in_channels: int = 3, init: Init = None,
                **kwargs: Any) -> nn.Module:
        return build(model, num_classes=num_classes, in_channels=in_channels, init=init,
                     **kwargs)

    return type(f"torchvision_{model}", (), {
        "__new__": __new__,
        "__doc__": f"torchvision.models.{model}, built untrained (other arguments go to its "
                   f"builder).",
        "__module__": __name__,
        "name": PREFIX + model,
        "torchvision_model": model,
    })


def build(model: str, num_classes: int, in_channels: int, init: str | None = None,
          **kwargs: Any) -> nn.Module:
    """torchvision's ``model`` with ``num_classes`` outputs, ``in_channels`` input channels and
    the initialisation scheme ``init`` (None: torchvision's own)."""
    from torchvision.models import get_model_builder

    if kwargs.pop("weights", None) is not None:
        raise ConfigError(f"{PREFIX}{model} is always built untrained; drop its 'weights' "
                          f"argument (fp never downloads pretrained weights).")
    try:
        network = get_model_builder(model)(weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{PREFIX}{model} rejected its arguments {sorted(kwargs)}: "
                          f"{exc}") from exc
    if in_channels != 3:
        replace_first_conv(network, in_channels, PREFIX + model)
    initialise(network, init, default=None, built_with=None, label=PREFIX + model)
    return expose_heads(network)


def replace_first_conv(network: nn.Module, in_channels: int, label: str) -> None:
    """Swap the first ``nn.Conv2d`` (in registration order, which is the input stem for every
    torchvision classifier) for a freshly initialised one reading ``in_channels`` channels."""
    for path, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            break
    else:
        raise ConfigError(f"{label} has no Conv2d to adapt to {in_channels} input channels.")
    groups = module.groups if in_channels % module.groups == 0 else 1
    stem = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                     module.padding, module.dilation, groups, bias=module.bias is not None,
                     padding_mode=module.padding_mode)
    init_weights(stem)
    parent_path, _, attribute = path.rpartition(".")
    setattr(network.get_submodule(parent_path), attribute, stem)
