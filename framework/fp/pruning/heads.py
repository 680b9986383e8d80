"""Attention: traced as one opaque node each, and pruned by whole heads where that is possible.

An attention module is an ``nn.MultiheadAttention`` or any module with an int ``num_heads`` and
an ``nn.Linear`` named ``qkv`` that projects q, k and v of every head at once (rows
``part * inner + head * head_dim + d``, parts q, k, v) and an output Linear ``proj`` or
``out_proj`` that reads the heads' values (columns ``head * head_dim + d``).

Tracing sees only its inputs and its output, never the reshapes inside (see ``opaque``); its
input and output width is the embedding width, so groups through it (the residual stream, the
patch embedding, class token, positional embedding and LayerNorms with it) are left unpruned.

Heads are pruned where the forward reads the head count and width from the module:
torchvision's ``ShiftedWindowAttention`` (Swin), given a forward that reads the head width from
``qkv`` once a head is gone (``windows.window_attention``), timm's ViT ``Attention`` (without a
gate or a norm over the heads' outputs; its ``attn_dim`` follows the heads) and Swin
``WindowAttention`` (``READS_HEADS``), and any class that sets ``fp_prunable_heads = True``
(fp's ``vit_cifar`` attention, ``expose_heads``). Other attention modules keep their heads: their
forward derives the head width from the input width, or they hold more per-head parts than
``remove_heads`` knows (a head-wide norm, separate q, k and v biases, a value width unlike the
key width).

A head group has one slot per head; its channels are the head's q, k and v rows of ``qkv``, in
the interleaved order of ``ChannelGroup`` (channel ``b * heads + h`` is row ``b`` of head ``h``),
so the head's score is the mean of its rows' filter scores and removing it takes its rows, its
``proj`` columns and its column of a relative position bias table. nn.MultiheadAttention keeps its heads:
its q/k/v projection is the bare parameter ``in_proj_weight``, which no measure scores.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.dependency import Dependency, Group, Node

from fp.errors import PruningError
from fp.pruning.windows import prunable_class

SWIN = ("torchvision.models.swin_transformer", "ShiftedWindowAttention")
#: per-head parameters of an attention module and the dim that indexes heads
PER_HEAD = {"relative_position_bias_table": -1}
#: attention classes of other libraries whose forward reads ``num_heads`` and the head width
#: (``head_dim``, ``attn_dim``, or -1 in a reshape) from the module, never from the input width:
#: (module path, class name) -> the condition on an instance (the parts it must not have)
READS_HEADS = {
    ("timm.layers.attention", "Attention"):  # timm's ViT, DeiT, MobileViT, ...
        lambda m: getattr(m, "gate", None) is None
        and isinstance(getattr(m, "norm", None), nn.Identity),
    ("timm.models.swin_transformer", "WindowAttention"):  # timm's Swin (v1)
        lambda m: True,
}
#: attributes that hold the width of all heads together, kept equal to heads x head width
ALL_HEADS_WIDTH = ("attn_dim",)


def attention_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Every outermost attention module of ``model`` and its name."""
    found: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if is_attention(module) and not any(name.startswith(f"{n}.") for n in found.values()):
            found[module] = name
    return found


def is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or (
        isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "qkv", None), nn.Linear))


def output_projection(module: nn.Module) -> nn.Linear | None:
    for name in ("proj", "out_proj"):
        if isinstance(getattr(module, name, None), nn.Linear):
            return getattr(module, name)
    return None


def is_swin(cls: type) -> bool:
    """torchvision's ShiftedWindowAttention itself (not V2), or it with fp's forward."""
    return (cls.__module__, cls.__name__) == SWIN or getattr(cls, "fp_window_heads", False)


def prunable_heads(module: nn.Module) -> bool:
    """True if ``module``'s heads can go (see the module docstring)."""
    if not is_attention(module) or isinstance(module, nn.MultiheadAttention):
        return False
    proj, qkv = output_projection(module), module.qkv
    fits = proj is not None and qkv.out_features == 3 * proj.in_features and \
        proj.in_features % module.num_heads == 0
    return fits and (getattr(type(module), "fp_prunable_heads", False) or is_swin(type(module))
                     or reads_heads(module))


def reads_heads(module: nn.Module) -> bool:
    """Whether ``module`` is one of ``READS_HEADS``, without parts a head removal leaves behind."""
    condition = READS_HEADS.get((type(module).__module__, type(module).__qualname__))
    return condition is not None and bool(condition(module))


class HeadHandle(Group):
    """torch-pruning's view of a head group (qkv rows out, proj columns in), for cost estimates;
    ``remove`` does the surgery."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def remove(self, channels: list[int]) -> dict[str, Tensor]:
        heads = sorted({c % self.module.num_heads for c in channels})
        return {f"{self.name}.qkv.weight": remove_heads(self.module, heads)}


def head_parts(graph: tp.DependencyGraph, attention: dict[nn.Module, str],
               protected: list[nn.Module]) -> list[tuple]:
    """``ChannelGroup`` fields (root, width, members, modules, interleave, handle) of every head
    group."""
    parts = []
    for module, name in attention.items():
        if module in protected or not prunable_heads(module) or module.qkv in protected:
            continue
        heads, inner = module.num_heads, module.qkv.out_features // 3
        dim = inner // heads
        block = torch.arange(3 * dim)
        head = torch.arange(heads)
        rows = ((block // dim * inner + block % dim)[:, None] + head * dim).reshape(-1)
        handle = HeadHandle(module, name)
        handle._DG = graph
        add_item(handle, graph, module.qkv, tp.prune_linear_out_channels, rows,
                 torch.arange(len(rows)))
        values = torch.arange(2 * dim * heads, 3 * dim * heads)  # v rows, in group coordinates
        add_item(handle, graph, output_projection(module), tp.prune_linear_in_channels,
                 rows[values] - 2 * inner, values)
        members = {f"{name}.qkv.weight": rows}
        parts.append((f"{name}.qkv.weight", len(rows), members,
                      {f"{name}.qkv.weight": module.qkv}, 3 * dim, handle))
    return parts


def add_item(handle: Group, graph: tp.DependencyGraph, module: nn.Module, fn, idxs: Tensor,
             root_idxs: Tensor) -> None:
    if module not in graph.module2node:  # inside an opaque node: known to costs only
        graph.module2node[module] = Node(module, None, graph._module2name.get(module))
    node = graph.module2node[module]
    handle.add_dep(Dependency(fn, fn, source=node, target=node), idxs.tolist())
    handle[len(handle) - 1].root_idxs = root_idxs.tolist()


def remove_heads(module: nn.Module, heads: list[int]) -> Tensor:
    """Remove ``heads`` from ``module`` in place; its removed qkv rows."""
    count, inner = module.num_heads, module.qkv.out_features // 3
    dim = inner // count
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    if len(heads) >= count or min(heads) < 0 or max(heads) >= count:
        raise PruningError(f"cannot remove heads {heads} of {type(module).__name__} with "
                           f"{count} heads.")
    within = torch.tensor([h * dim + d for h in heads for d in range(dim)])
    rows = torch.cat([within + part * inner for part in range(3)])
    tp.prune_linear_out_channels(module.qkv, rows.tolist())
    tp.prune_linear_in_channels(output_projection(module), within.tolist())
    keep = [h for h in range(count) if h not in heads]
    for attr, dim_of_heads in PER_HEAD.items():
        param = getattr(module, attr, None)
        if isinstance(param, nn.Parameter) and param.shape[dim_of_heads] == count:
            pruner = tp.pruner.function.ParameterPruner(pruning_dim=dim_of_heads)
            setattr(module, attr, pruner._prune_parameter_and_grad(param, keep, dim_of_heads))
    module.num_heads, module.head_dim = len(keep), dim
    for attr in ALL_HEADS_WIDTH:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, len(keep) * dim)
    reconcile_module(module)
    return rows.sort().values


def reconcile(model: nn.Module) -> None:
    """Give every Swin attention module the forward of ``windows`` (when it is grouped, and
    after a model is rebuilt from saved attributes and shapes)."""
    for module in attention_modules(model):
        reconcile_module(module)


def reconcile_module(module: nn.Module) -> None:
    if not isinstance(module, nn.MultiheadAttention) and is_swin(type(module)):
        module.__class__ = prunable_class(type(module))


__all__ = ["HeadHandle", "attention_modules", "head_parts", "prunable_heads", "reconcile",
           "remove_heads"]
