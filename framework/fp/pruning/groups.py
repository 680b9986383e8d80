"""Channel groups: output channels that can only be removed together, found by torch-pruning's
dependency graph (DepGraph, Fang et al. 2023) for any architecture it can trace.

A group is traced from one conv/linear layer (its *root*) and holds every layer whose channels
are tied to the root's: the BatchNorm that follows it, the next layers' input channels, the other
branches of a residual add (their output channels are *members* of the group too), depthwise
convs, the slice of a concatenation, an SE block's gate. Removing group channel ``c`` removes
``members[name][c]`` from each member weight's output channels.

Scoring rule (the paper ranks filters globally across layers, Sec. 5): the score of channel ``c``
of a group is the MEAN over the group's member weights of their filter scores for ``c``; members
without a score are ignored. A mean, not a sum, keeps a channel tied across three residual
branches comparable with a channel of a single plain conv.

Grouped convs and GroupNorm (G blocks) need every block to lose the same positions, so their
group's unit is a *slot* of ``interleave`` = G channels ``{s, s + W/G, s + 2W/G, ...}`` (as
torch-pruning's own pruners do), scored by the mean over those channels.

An attention head is a slot too (``attention``): a head group's channels are the q, k and v rows
of its ``qkv`` layer, ``interleave`` = 3 x head width of them per head, so a head scores the mean
of its rows' filter scores, as any slot does.

The layer whose output is the model's output (the classifier, found in the traced graph, not by
name) and layers named in ``protected`` never lose output channels; they may lose input channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch_pruning as tp
from torch import Tensor, nn

from fp.errors import PruningError
from fp.nn import PRUNABLE_LAYERS, prunable_layers
from fp.pruning.heads import attention_modules, head_parts, reconcile
from fp.pruning.trace import budget, build_graph, reason


@dataclass
class ChannelGroup:
    """Output channels removed together; see the module docstring."""

    root: str                       # weight name of the layer the group was traced from
    width: int                      # channels of the group (the root's output channels)
    members: dict[str, Tensor]      # weight name -> member channel of each group channel (-1: none)
    modules: dict[str, nn.Module]   # weight name -> its layer
    interleave: int                 # channels per slot: G of the grouped convs in the group
    handle: Any                     # torch-pruning's Group with every channel (``handle._DG``)

    @property
    def slots(self) -> int:
        return self.width // self.interleave

    def slot_channels(self, slot: int) -> list[int]:
        return [slot + block * self.slots for block in range(self.interleave)]

    def channel_scores(self, filter_scores: dict[str, Tensor]) -> Tensor | None:
        """Mean member score of each channel (NaN where no member is scored); None if none is."""
        total, count = torch.zeros(self.width), torch.zeros(self.width)
        for name, channel_map in self.members.items():
            if name in filter_scores:
                present = channel_map >= 0
                scores = checked_scores(name, filter_scores[name], self)
                total[present] += scores[channel_map[present]]
                count[present] += 1
        return total / count if count.any() else None

    def slot_scores(self, filter_scores: dict[str, Tensor]) -> Tensor | None:
        channels = self.channel_scores(filter_scores)
        return None if channels is None else channels.view(self.interleave, self.slots).nanmean(0)


def checked_scores(name: str, scores: Tensor, group: ChannelGroup) -> Tensor:
    width = int(group.modules[name].weight.shape[0])
    scores = scores.detach().float().cpu()
    if scores.shape != (width,):
        raise PruningError(f"filter scores for {name!r} have shape {tuple(scores.shape)}, but the "
                           f"weight has {width} output channels.")
    if torch.isnan(scores).any():
        raise PruningError(f"filter scores for {name!r} contain NaN; the measure failed on it.")
    return scores


def dependency_graph(model: nn.Module, example_inputs: Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, traced with ``example_inputs``."""
    reconcile(model)  # Swin attention gets a forward that any head count suits
    return build_graph(model, example_inputs)


def channel_groups(model: nn.Module, example_inputs: Tensor, *, protected: Iterable[str] = (),
                   graph: tp.DependencyGraph | None = None) -> list[ChannelGroup]:
    """Every group of ``model`` that may lose channels, traced with ``example_inputs``; attention
    heads are groups too, and groups through an attention module's embedding are left out
    (see ``attention``).

    ``graph``, ``model``'s ``dependency_graph`` traced before, spares the trace, the costliest
    part: it stays valid through surgery (torch-pruning maps indices afresh for every group, as
    its own iterative pruners do), so one prune event traces once however many rounds it takes."""
    if graph is None:
        graph = dependency_graph(model, example_inputs)
    names = {module: name for name, module in prunable_layers(model)}
    attention = attention_modules(model)
    kept = protected_layers(model, protected)
    try:
        with budget(graph, model):
            handles = list(graph.get_all_groups(ignored_layers=kept + output_layers(graph),
                                                root_module_types=PRUNABLE_LAYERS))
    except PruningError:
        raise
    except Exception as exc:  # index bookkeeping that explodes on nested reshapes, ...
        raise PruningError(f"torch-pruning cannot group the channels of {type(model).__name__}: "
                           f"{reason(exc)}.") from exc
    groups = [describe(handle, graph, names) for handle in handles
              if not any(item.dep.target.module in attention for item in handle)]
    groups += [ChannelGroup(*parts) for parts in head_parts(graph, attention, kept)]
    return [group for group in groups if group is not None]


def matches(name: str, prefixes: Iterable[str]) -> bool:
    """True if ``name`` is one of ``prefixes`` or lies inside one ("layer1" covers "layer1.0.x")."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def protected_layers(model: nn.Module, protected: Iterable[str]) -> list[nn.Module]:
    prefixes = tuple(protected)
    return [module for name, module in model.named_modules()
            if prefixes and (matches(name, prefixes) or matches(f"{name}.weight", prefixes))]


def output_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """The conv/linear layers whose outputs reach the model output through channel-preserving
    ops only (flatten, pooling, norms, adds): removing their channels would change the output."""
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen, found = set(), []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, PRUNABLE_LAYERS):
            found.append(node.module)
        else:
            stack.extend(node.inputs)
    return found


def describe(handle, graph: tp.DependencyGraph, names: dict[nn.Module, str]) -> ChannelGroup | None:
    width = len(handle[0].idxs)
    members, modules, interleave = {}, {}, 1
    for item in handle:
        module, is_out = item.dep.target.module, graph.is_out_channel_pruning_fn(item.dep.handler)
        if is_out and module in names:
            channel_map = torch.full((width,), -1, dtype=torch.long)
            channel_map[torch.as_tensor(item.root_idxs)] = torch.as_tensor(item.idxs)
            members[names[module]], modules[names[module]] = channel_map, module
        interleave = math.lcm(interleave, channel_blocks(graph, module, is_out))
    if not members or width % interleave:
        return None  # nothing scorable, or blocks torch-pruning cannot shrink evenly
    root = names.get(handle[0].dep.target.module, next(iter(members)))
    return ChannelGroup(root, width, members, modules, interleave, handle)


def channel_blocks(graph: tp.DependencyGraph, module: Any, is_out: bool) -> int:
    """G for a grouped conv or GroupNorm (1 otherwise): its channels shrink block by block."""
    if not isinstance(module, nn.Module):
        return 1
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
        return 1  # depthwise: each channel is its own block, any subset can go
    pruner = graph.get_pruner_of_module(module)
    blocks = getattr(pruner, "get_out_channel_groups" if is_out else "get_in_channel_groups", None)
    return int(blocks(module)) if blocks is not None else 1
