"""A model's torch.fx graph, traced once and read by everything that needs the model's wiring: which
BatchNorm normalises a layer's output channels ("the following BN" of bn_scale/bn_taylor, here)
and which BatchNorms fold into the convolution feeding them (``fp.scoring.layers.fold``).

The trace keeps every conv/linear layer, every BatchNorm and every torch.nn module as one
call_module node. It costs more than a data-free measure's whole score, so it is remembered per
model object while the model's ``structure`` stays the same (module names, types and tensor
shapes, and each module's mode and any forward set on the instance: what pruning surgery, a
swapped submodule, ``train()``/``eval()`` or a patched forward changes). The assumption is that a
module's forward code does not change while all that stays the same.

The following BatchNorm: from the layer's call, follow single-user elementwise nodes
(activations, dropout) to a BatchNorm, so conv→BN and the seed VGG's conv→ReLU→BN both count while
a residual add, a concatenation or a second consumer ends the walk. Models fx cannot trace, and
layers it traces through, fall back to the order modules run in (registration order without an
example input): the first BatchNorm after the layer, before any other conv/linear layer.
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


def structure(model: nn.Module, *, widths: bool = True) -> tuple:
    """Every module's qualified name and type (the model's own class first) and, with
    ``widths``, the shapes of its own parameters and buffers: what pruning surgery or a swapped
    submodule changes. (``_parameters`` and ``_buffers`` directly: the public generators make
    this 1.5x slower.)"""
    if not widths:
        return tuple((name, type(module)) for name, module in model.named_modules())
    return tuple((name, type(module), *_named_shapes(module._parameters),
                  *_named_shapes(module._buffers)) for name, module in model.named_modules())


def _named_shapes(tensors: dict[str, Tensor | None]) -> list[tuple[str, torch.Size | None]]:
    return [(name, None if t is None else t.shape) for name, t in tensors.items()]


def _trace_key(model: nn.Module) -> tuple:
    """What a trace depends on besides the forward code: the structure, and each module's mode
    and instance forward (fx traces through a non-leaf module's forward as it is now)."""
    return structure(model), tuple((m.training, "forward" in vars(m)) for m in model.modules())


class _LayerTracer(fx.Tracer):
    """Keeps every conv/linear layer and every BatchNorm as one call_module node, even subclasses
    defined outside torch.nn that the default tracer would trace through."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (isinstance(m, (*PRUNABLE_LAYERS, BATCHNORM))
                or super().is_leaf_module(m, qualified_name))


#: model → (``_trace_key`` when traced, its graph or None where fx could not trace it); an entry
#: for an earlier structure is replaced, as a pruned model does not return to it
_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, fx.Graph | None]] = \
    weakref.WeakKeyDictionary()


def traced(model: nn.Module) -> fx.Graph | None:
    """``model``'s fx graph (see the module docstring), or None when fx cannot trace it; traced
    once while the model's ``_trace_key`` stays the same."""
    key = _trace_key(model)
    cached = _TRACES.get(model)
    if cached is None or cached[0] != key:
        cached = _TRACES[model] = key, _trace(model)
    return cached[1]


def _trace(model: nn.Module) -> fx.Graph | None:
    try:
        return _LayerTracer().trace(model)
    except Exception:  # noqa: BLE001 - fx rejects data-dependent control flow in many ways
        return None


def following_batchnorms(model: nn.Module, weight_names: list[str],
                         example_input: Tensor | None = None) -> dict[str, str | None]:
    """Weight name → qualified name of the BatchNorm over its output channels, or None."""
    owners = {name: name.rpartition(".")[0] for name in weight_names}
    modules = dict(model.named_modules())
    graph = traced(model)
    found = {} if graph is None else _by_graph(graph, set(owners.values()), modules)
    # a layer the trace went through (or no trace at all) is looked up by module order; that
    # depends on the example input, so it is not remembered
    rest = set(owners.values()) - set(found)
    if rest:
        found |= _by_module_order(model, rest, example_input, set(owners.values()))
    result = {}
    for name, owner in owners.items():
        bn = found.get(owner)
        fits = bn is not None and modules[bn].num_features == model.get_parameter(name).shape[0]
        result[name] = bn if fits else None
    return result


def _by_graph(graph: fx.Graph, owners: set[str],
              modules: dict[str, nn.Module]) -> dict[str, str | None]:
    """The following BatchNorm of each owner the trace keeps as one call (None for one it never
    calls); the others are left out."""
    candidates: dict[str, set[str | None]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and node.target in owners:
            candidates.setdefault(node.target, set()).add(_batchnorm_after(node, modules))
    tracer = _LayerTracer()
    # a layer called more than once qualifies only if every call leads to the same BatchNorm
    found = {owner: next(iter(bns)) if len(bns) == 1 else None
             for owner, bns in candidates.items()}
    # a layer kept as one call but never called has none; so has the model itself, never a call
    return found | {owner: None for owner in owners - set(found) if owner == ""
                    or (owner in modules and tracer.is_leaf_module(modules[owner], owner))}


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


def _by_module_order(model: nn.Module, owners: set[str], example_input: Tensor | None,
                     layers: set[str]) -> dict[str, str | None]:
    """For each of ``owners``: the first BatchNorm to run after it before another of ``layers``
    or any conv/linear layer, or None."""
    order = _execution_order(model, example_input) or [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    found: dict[str, str | None] = {}
    for owner in owners & set(order):
        found[owner] = None
        for name in order[order.index(owner) + 1:]:
            if isinstance(modules[name], BATCHNORM):
                found[owner] = name
                break
            if name in layers or isinstance(modules[name], PRUNABLE_LAYERS):
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
