"""Which BatchNorm normalises a layer's output channels: "the following BN" of bn_scale/bn_taylor.

Read from the torch.fx graph: from the layer's call, follow single-user elementwise nodes
(activations, dropout) to a BatchNorm, so conv→BN and the seed VGG's conv→ReLU→BN both count while
a residual add, a concatenation or a second consumer ends the walk. Models fx cannot trace fall
back to the order modules run in (registration order without an example input): the first
BatchNorm after the layer, before any other conv/linear layer.

Tracing costs more than a data-free measure's whole score, so its outcome is remembered per model
object, together with a fingerprint of the model's structure (module names, types and tensor
shapes): pruning surgery changes shapes in place, and with them the fingerprint. The assumption is
that a module's forward code does not change while its names, types and shapes stay the same.
"""
from __future__ import annotations

import weakref
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from fp.nn import PRUNABLE_LAYERS, eval_mode

BATCHNORM = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, torch.sigmoid,
    torch.tanh, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous"}

#: model → (its structure's fingerprint, {scored layers: traced layer → BatchNorm map, or None
#: where fx could not trace it}); entries for an earlier structure are dropped, as a pruned model
#: does not return to it
_TRACED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[tuple[str, ...], dict | None]]] = \
    weakref.WeakKeyDictionary()


def following_batchnorms(model: nn.Module, weight_names: list[str],
                         example_input: Tensor | None = None) -> dict[str, str | None]:
    """Weight name → qualified name of the BatchNorm over its output channels, or None."""
    owners = {name: name.rpartition(".")[0] for name in weight_names}
    found = _traced(model, set(owners.values()))
    if found is None:  # the fallback depends on the example input, so it is not remembered
        found = _by_module_order(model, set(owners.values()), example_input)
    modules = dict(model.named_modules())
    result = {}
    for name, owner in owners.items():
        bn = found.get(owner)
        fits = bn is not None and modules[bn].num_features == model.get_parameter(name).shape[0]
        result[name] = bn if fits else None
    return result


class _LayerTracer(fx.Tracer):
    """Keeps every scored layer and every BatchNorm as one call_module node, even subclasses
    defined outside torch.nn that the default tracer would trace through."""

    def __init__(self, owners: set[str]):
        super().__init__()
        self.owners = owners

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (qualified_name in self.owners or isinstance(m, BATCHNORM)
                or super().is_leaf_module(m, qualified_name))


def _traced(model: nn.Module, owners: set[str]) -> dict[str, str | None] | None:
    """``_by_tracing``'s result, remembered while the model's structure stays the same; None
    when fx cannot trace the model."""
    fingerprint, layers = structure_fingerprint(model), tuple(sorted(owners))
    if model not in _TRACED or _TRACED[model][0] != fingerprint:
        _TRACED[model] = (fingerprint, {})
    known = _TRACED[model][1]
    if layers not in known:
        try:
            known[layers] = _by_tracing(model, owners)
        except Exception:  # noqa: BLE001 - fx rejects data-dependent control flow in many ways
            known[layers] = None
    return known[layers]


def structure_fingerprint(model: nn.Module) -> tuple:
    """Every module's qualified name and type with the shapes of its own parameters and
    buffers: what pruning surgery or a swapped submodule changes. (``_parameters`` and
    ``_buffers`` directly: the public generators make this 1.5x slower.)"""
    return tuple((name, type(module), *_named_shapes(module._parameters),
                  *_named_shapes(module._buffers)) for name, module in model.named_modules())


def _named_shapes(tensors: dict[str, Tensor | None]) -> list[tuple[str, torch.Size | None]]:
    return [(name, None if t is None else t.shape) for name, t in tensors.items()]


def _by_tracing(model: nn.Module, owners: set[str]) -> dict[str, str | None]:
    graph = _LayerTracer(owners).trace(model)
    modules = dict(model.named_modules())
    candidates: dict[str, set[str | None]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in owners:
            candidates.setdefault(node.target, set()).add(_batchnorm_after(node, modules))
    # a layer called more than once qualifies only if every call leads to the same BatchNorm
    return {owner: next(iter(bns)) if len(bns) == 1 else None for owner, bns in candidates.items()}


def _batchnorm_after(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    while len(node.users) == 1:
        (node,) = node.users
        if node.op == "call_module" and isinstance(modules.get(node.target), BATCHNORM):
            return node.target
        if not _is_elementwise(node, modules):
            return None
    return None


def _is_elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def _by_module_order(model: nn.Module, owners: set[str],
                     example_input: Tensor | None) -> dict[str, str | None]:
    order = _execution_order(model, example_input) or [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    found: dict[str, str | None] = {}
    for owner in owners & set(order):
        found[owner] = None
        for name in order[order.index(owner) + 1:]:
            if isinstance(modules[name], BATCHNORM):
                found[owner] = name
                break
            if name in owners or isinstance(modules[name], PRUNABLE_LAYERS):
                break
    return found


def _execution_order(model: nn.Module, example_input: Tensor | None) -> list[str]:
    """Module names in the order their forward runs first; [] without an input or on failure."""
    if example_input is None:
        return []
    order: list[str] = []
    handles = [module.register_forward_pre_hook(lambda *_, n=name: order.append(n))
               for name, module in model.named_modules() if name]
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input)
    except Exception:  # noqa: BLE001 - the registration order is the fallback's fallback
        return []
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))
