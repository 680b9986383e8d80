"""Layers whose double backward is cheap, swapped in while Hessian-vector products run.

Reverse-over-reverse differentiates the backward pass itself. PyTorch's generic double backward
of a convolution computes the weight term as a convolution with batch and channels swapped, and
that of BatchNorm re-derives batch statistics even in eval mode; both cost several forward passes
more than needed. Here a convolution's backward is itself an autograd Function whose backward is
written out: for cotangents (a_x, a_w, a_b) of (∂x, ∂W, ∂b) it needs two forward convolutions and
one convolution_backward, the least a convolution's Hessian-vector product can cost. Eval-mode
BatchNorm, a fixed per-channel affine map, becomes that map in plain tensor operations.

Every replacement computes the same function and the same derivatives; only rounding differs.
"""
from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from typing import Iterator

import torch
import torch.fx as fx
from torch import Tensor, nn

from fp.scoring.conv_autograd import Convolution, Geometry
from fp.scoring.topology import structure_fingerprint

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = nn.modules.batchnorm._BatchNorm


def _conv_forward(module: nn.Module, geometry: Geometry, batchnorm: nn.Module | None,
                  scales: dict[nn.Module, Tensor]):
    """The convolution, with the eval-mode BatchNorm that alone consumes its output folded in:
    conv(x, W)·s + c = conv(x, W·s) + c, so the map costs no activation-sized work of its own."""
    def forward(x: Tensor) -> Tensor:
        weight, bias = module.weight, module.bias
        if batchnorm is not None:
            scale, shift = _batchnorm_affine(batchnorm)
            weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
            bias = shift if bias is None else torch.addcmul(shift, bias, scale)
        return Convolution.apply(x, weight, bias, scales.get(module), geometry)
    return forward


def _batchnorm_affine(module: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as the per-channel affine map x·s + c it is: (s, c)."""
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    return scale, shift


def _affine_batchnorm_forward(module: nn.Module):
    def forward(x: Tensor) -> Tensor:
        scale, shift = _batchnorm_affine(module)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape))
    return forward


def _identity(x: Tensor) -> Tensor:
    return x


def _is_fixed_batchnorm(module: nn.Module) -> bool:
    return (isinstance(module, _BATCHNORM) and not module.training
            and module.running_mean is not None and module.running_var is not None)


def replaceable(module: nn.Module) -> bool:
    """Whether ``cheap_double_backward`` runs this module as ``Convolution``."""
    return _is_plain_conv(module) and "forward" not in vars(module)


def _is_plain_conv(module: nn.Module) -> bool:
    return (isinstance(module, _CONVS) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, (*_CONVS, _BATCHNORM)) or super().is_leaf_module(m, qualified_name)


def _gamma_has_beta(bn: nn.Module) -> bool:
    """A trainable γ folds only beside a trainable β: filter-wise products of a folded pair
    need ∂L/∂β to correct for the fold (``hvp.mean_filter_hess_grad``)."""
    return (bn.weight is None or not bn.weight.requires_grad
            or (bn.bias is not None and bn.bias.requires_grad))


#: model → (its structure when traced, the pairs found): a prune event folds once per batch
_PAIRS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, str]]]" = \
    weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """What the pairs depend on besides the forward code: modules and shapes, modes, frozen γ/β
    and patched forwards."""
    return structure_fingerprint(model), tuple(
        (m.training, "forward" in vars(m), *(p.requires_grad for p in m.parameters(False)))
        for m in model.modules())


def foldable_pairs(model: nn.Module) -> dict[str, str]:
    """Convolution name → name of the eval-mode BatchNorm that is its output's only consumer,
    each module called exactly once; {} when torch.fx cannot trace the model. Cached per model
    while its modules, their modes and their parameters' shapes stay the same."""
    structure = _structure(model)
    cached = _PAIRS.get(model)
    if cached is not None and cached[0] == structure:
        return dict(cached[1])
    pairs = _traced_pairs(model)
    _PAIRS[model] = structure, pairs
    return dict(pairs)


def _traced_pairs(model: nn.Module) -> dict[str, str]:
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - fx rejects data-dependent control flow in many ways
        return {}
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not _is_plain_conv(modules[node.target]):
            continue
        if len(node.users) != 1:
            continue
        (user,) = node.users
        if (user.op == "call_module" and _is_fixed_batchnorm(modules[user.target])
                and user.args[:1] == (node,) and len(user.args) + len(user.kwargs) == 1
                and calls[node.target] == 1 and calls[user.target] == 1
                and not any("forward" in vars(modules[n]) for n in (node.target, user.target))
                and modules[user.target].num_features == modules[node.target].out_channels
                and _gamma_has_beta(modules[user.target])):
            pairs[node.target] = user.target
    return pairs


def _replacements(model: nn.Module, scales: dict[nn.Module, Tensor]) -> dict[nn.Module, object]:
    modules = dict(model.named_modules())
    pairs = foldable_pairs(model)
    folded = {modules[bn] for bn in pairs.values()}
    chosen = {}
    for name, module in modules.items():
        if "forward" in vars(module):  # someone already patched this instance: leave it be
            continue
        if _is_plain_conv(module):
            bn = modules[pairs[name]] if name in pairs else None
            chosen[module] = _conv_forward(module, Geometry(
                tuple(module.stride), tuple(module.padding), tuple(module.dilation),
                module.groups), bn, scales)
        elif _is_fixed_batchnorm(module):
            chosen[module] = _identity if module in folded else _affine_batchnorm_forward(module)
    return chosen


@contextlib.contextmanager
def cheap_double_backward(model: nn.Module, scales: dict[nn.Module, Tensor] | None = None
                          ) -> Iterator[nn.Module]:
    """Within the block, ``model``'s convolutions and eval-mode BatchNorms run as the layers
    above. Enter it with the model already in the mode it will be differentiated in. ``scales``
    gives convolutions (``replaceable``) their filter scales (see ``Convolution``)."""
    patched = []
    try:
        for module, forward in _replacements(model, scales or {}).items():
            module.forward = forward
            patched.append(module)
        yield model
    finally:
        for module in patched:
            del module.forward
