"""Model size statistics: parameters, FLOPs and prunable filters (docs/run-directory.md, summary.json).

A *prunable weight* is the weight of a layer ``fp.nn.PRUNABLE_LAYERS`` lists (conv 1-3d, linear);
its *filters* are its output channels (dim 0). Filters switched off by a filter mask
(``filter_masks``, ``prune.residual = "masked"``) count as pruned filters, their masked entries as
pruned parameters and their share of their layer's FLOPs as pruned FLOPs. FLOPs are what ``torch.utils.flop_counter.FlopCounterMode`` counts for one
forward pass of a single example (a multiply-add counts 2; norms and activations count 0).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fp.nn import eval_mode, prunable_layers
from fp.pruning.filter_masks import filter_masks, masked_filters, masked_params


def filter_widths(model: nn.Module) -> dict[str, int]:
    """Prunable weight name -> its number of output channels (filters)."""
    return {name: int(layer.weight.shape[0]) for name, layer in prunable_layers(model)}


def kept_widths(model: nn.Module) -> dict[str, int]:
    """Prunable weight name -> its output channels less the masked ones (``filter_masks``)."""
    widths = filter_widths(model)
    for name, masked in masked_filters(model, widths).items():
        widths[name] -= masked
    return widths


def prunable_filters(model: nn.Module) -> int:
    """Output channels of the prunable weights, masked filters not counted: the paper's count."""
    return sum(kept_widths(model).values())


def count_params(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> int:
    """Number of parameters; entries in masked filter rows (``filter_masks``) and, with weight
    ``masks`` (True = kept), masked weights do not count."""
    total = sum(p.numel() for p in model.parameters()) - masked_params(model)
    if masks:
        total -= sum(int((~mask.bool()).sum()) for mask in masks.values())
    return total


def count_flops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass of the first example of ``example_inputs`` (eval mode), less the
    masked filters' share of their layers' FLOPs."""
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(first_example(example_inputs))
    total = int(counter.get_total_flops())
    if filter_masks(model):
        total -= masked_flops(model, module_flops(model, counter))
    return total


def masked_flops(model: nn.Module, flops: dict[str, int]) -> int:
    """The FLOPs of the masked filters: per masked layer, its FLOPs x masked / output channels."""
    widths = filter_widths(model)
    saved = 0.0
    for name, masked in masked_filters(model, widths).items():
        saved += flops.get(name.removesuffix(".weight"), 0) * masked / widths[name]
    return int(round(saved))


def layer_flops(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, int]:
    """Module name -> FLOPs counted inside it (children included) for one example."""
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(first_example(example_inputs))
    return module_flops(model, counter)


def module_flops(model: nn.Module, counter: FlopCounterMode) -> dict[str, int]:
    """Module name -> FLOPs ``counter`` counted inside it (children included)."""
    prefix = type(model).__name__
    flops = {}
    for key, by_op in counter.get_flop_counts().items():
        if key == prefix or key.startswith(prefix + "."):
            flops[key[len(prefix) + 1:]] = int(sum(by_op.values()))
    return flops


def dense_stats(model: nn.Module, example_inputs: torch.Tensor, *,
                flops: bool = True) -> dict[str, Any]:
    """What pruning targets are fractions of: params, flops, filters and per-weight ``widths``.
    ``flops=False`` leaves out the FLOP count, a forward pass only a FLOP target reads."""
    widths = filter_widths(model)
    stats = {"params": count_params(model), "filters": sum(widths.values()), "widths": widths}
    if flops:
        stats["flops"] = count_flops(model, example_inputs)
    return stats


def first_example(example_inputs: torch.Tensor) -> torch.Tensor:
    """Batch of one: FLOPs are reported per example."""
    return example_inputs[:1]
