"""Building blocks shared by the built-in architectures: one conv/BN/ReLU helper, the weight
initialisation schemes and one classifier head, so no model carries its own copy of them.

Initialisation (``model.init``, or an architecture's own ``init`` argument, e.g. ``vgg13.init``;
``model.init`` wins when both are set):

- ``"torch_default"``: the layers as PyTorch constructs them (kaiming-uniform, a = sqrt(5), for
  conv and linear weights; BatchNorm at weight 1, bias 0). This is what the seed paper's code
  trains (its models.py initialises nothing), and what vgg13, mobilenet_v1, the CIFAR ResNets and
  resnet18/34 use by default. Their modules are constructed in the order of the paper's code, so
  under the same ``torch.manual_seed`` they hold the paper's initial weights tensor for tensor.
  Every conv filter then has E||w||^2 = 1/3 whatever its layer's width, so global magnitude
  pruning starts from a flat field.
- ``"kaiming_fan_out"``: He normal (fan-out) for convs, BatchNorm 1/0 (``init_weights``), the
  usual CIFAR reference init; E||w||^2 = 2 c_in / c_out, so it differs from layer to layer.
  ``small_cnn``'s default (the quickstart's numbers were made with it).
- ``None``: the architecture's default (a built-in's ``default_init``; ``vit_cifar`` and
  ``torchvision.*`` keep torchvision's own init).

On a ``torchvision.*`` model, ``"torch_default"`` re-runs ``reset_parameters()`` of every module
that has one (convs, linears, norm layers, ...), and ``"kaiming_fan_out"`` applies
``init_weights`` to the whole model.
"""
from __future__ import annotations

from typing import Annotated, Callable

from torch import Tensor, nn

from fp.errors import ConfigError
from fp.validation import OneOf

TORCH_DEFAULT = "torch_default"
KAIMING_FAN_OUT = "kaiming_fan_out"
#: the initialisation schemes an architecture can be built with (``model.init``)
INITS = (TORCH_DEFAULT, KAIMING_FAN_OUT)
#: an ``init`` constructor argument: a scheme, or None for the architecture's default
Init = Annotated[str | None, OneOf(*INITS)]


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
         groups: int = 1) -> nn.Conv2d:
    """A bias-free conv with 'same' padding (every conv here is followed by a BatchNorm, which
    makes a conv bias redundant, as in the seed paper's models)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, groups=groups, bias=False)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, relu_before_bn: bool = False) -> list[nn.Module]:
    """conv -> BN -> ReLU as a list of layers to splice into an ``nn.Sequential``.

    ``relu_before_bn`` gives conv -> ReLU -> BN, the order of the seed paper's VGG.
    """
    layers = [conv(in_channels, out_channels, kernel_size, stride, groups),
              nn.BatchNorm2d(out_channels), nn.ReLU()]
    if relu_before_bn:
        layers[1], layers[2] = layers[2], layers[1]
    return layers


def init_weights(model: nn.Module) -> None:
    """He (kaiming-normal, fan-out) init for convs and unit-scale, zero-shift BatchNorm: the
    usual initialisation of the CIFAR ResNet/VGG/MobileNet reference code."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def reset_to_torch_defaults(model: nn.Module) -> None:
    """Re-run ``reset_parameters()`` of every module that has one (convs, linears, norm layers,
    ...): PyTorch's own initialisation of each layer, whatever the model's builder did after."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


#: scheme -> what applies it to a model already built
INITIALISERS: dict[str, Callable[[nn.Module], None]] = {
    TORCH_DEFAULT: reset_to_torch_defaults, KAIMING_FAN_OUT: init_weights}


def initialise(model: nn.Module, init: str | None, *, default: str | None,
               built_with: str | None, label: str) -> None:
    """Give ``model`` the scheme ``init`` (``default`` when None); nothing happens when that is
    the scheme its builder used (``built_with``), so the random stream stays the builder's.
    ``label`` names the architecture in errors."""
    if init is not None and init not in INITS:
        raise ConfigError(f"{label}.init = {init!r} is not an initialisation scheme; choose one of "
                          f"{', '.join(map(repr, INITS))}, or None for {label}'s default.")
    scheme = init if init is not None else default
    if scheme is not None and scheme != built_with:
        INITIALISERS[scheme](model)


class PooledClassifier(nn.Module):
    """``features`` -> global average pool -> one Linear: the head every built-in model shares.

    The pool is adaptive, so any input size works, and the Linear reads its width from the
    features at build time only, so physically pruned models keep running. The Linear is built
    last, as in the seed paper's code, so the random stream gives every layer the paper's
    initial weights; ``init`` (None: ``default_init``) then re-initialises if asked.
    """

    #: the scheme ``init = None`` means: the seed paper's code keeps PyTorch's layer defaults
    default_init: str = TORCH_DEFAULT

    def __init__(self, features: nn.Module, feature_width: int, num_classes: int,
                 init: Init = None) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feature_width, num_classes)
        initialise(self, init, default=self.default_init, built_with=TORCH_DEFAULT,
                   label=getattr(self, "name", type(self).__name__))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
