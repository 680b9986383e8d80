"""What removing one slot of a channel group saves, in filters, parameters or FLOPs.

Filters are exact: one per member weight that has the channel. Parameters and FLOPs are a
first-order estimate from the current shapes: the entries each affected tensor loses per removed
index (a conv row when its output goes, a column when its input goes, BN's gamma and beta, ...)
and, for FLOPs, the FLOPs per parameter of each layer. Two groups that shrink the same weight
(one its rows, one its columns) both count the entries where they cross, so the estimate
overstates the saving; ``prune_filters`` therefore re-measures after the surgery and tops up.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from fp.pruning.groups import ChannelGroup
from fp.pruning.stats import layer_flops


def slot_costs(groups: list[ChannelGroup], target_type: str, model: nn.Module,
               example_inputs: Tensor) -> list[Tensor]:
    """Per group, the (estimated) saving of removing each of its slots."""
    per_channel = COSTS[target_type](groups, model, example_inputs)
    return [costs.view(group.interleave, group.slots).sum(0)
            for group, costs in zip(groups, per_channel)]


def filter_costs(groups: list[ChannelGroup], model: nn.Module,
                 example_inputs: Tensor) -> list[Tensor]:
    return [sum((channel_map >= 0).double() for channel_map in group.members.values())
            for group in groups]


def param_costs(groups: list[ChannelGroup], model: nn.Module,
                example_inputs: Tensor) -> list[Tensor]:
    return [per_channel(group, lambda target: 1.0) for group in groups]


def flop_costs(groups: list[ChannelGroup], model: nn.Module,
               example_inputs: Tensor) -> list[Tensor]:
    flops = layer_flops(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}

    def flops_per_param(target) -> float:
        if not isinstance(target, nn.Module) or target not in names or any(target.children()):
            return 0.0  # a parent's FLOPs include its children's; only a leaf's are its own
        size = sum(p.numel() for p in target.parameters(recurse=False))
        return flops.get(names[target], 0) / size if size else 0.0

    return [per_channel(group, flops_per_param) for group in groups]


def per_channel(group: ChannelGroup, weight: Callable[[object], float]) -> Tensor:
    """Sum over the group's pruned tensors of (entries lost per index) x weight(tensor's owner)."""
    graph, costs = group.handle._DG, torch.zeros(group.width, dtype=torch.float64)
    for item in group.handle:
        target = item.dep.target.module
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        lost = entries_per_index(graph, item.dep.target, is_out)
        if lost:
            costs.index_add_(0, torch.as_tensor(item.root_idxs, dtype=torch.long),
                             torch.full((len(item.root_idxs),), lost * weight(target),
                                        dtype=torch.float64))
    return costs


def entries_per_index(graph, node, is_out: bool) -> float:
    target = node.module
    if isinstance(target, nn.Parameter):  # a bare parameter (layer scale, class token, ...)
        return target.numel() / target.shape[node.pruning_dim]
    params = list(target.parameters(recurse=False)) if isinstance(target, nn.Module) else []
    if not params:
        return 0.0
    channels = graph.get_out_channels(target) if is_out else graph.get_in_channels(target)
    if not channels:
        return 0.0
    # an input channel takes a column of each weight matrix; biases and norm vectors stay
    return sum(p.numel() for p in params if is_out or p.dim() > 1) / channels


#: target type -> per-channel cost estimate (a registry, so adding a target type is one entry)
COSTS: dict[str, Callable[..., list[Tensor]]] = {
    "filters": filter_costs, "params": param_costs, "flops": flop_costs}
