"""Residual channels masked per filter: the seed paper's ResNet pruning (``prune.residual``).

``"tied"`` (the default) removes channels that meet at a residual add together, across every
branch of the add, scored by the mean of their filters' scores (``groups``). ``"masked"`` follows
the paper's ResNet-56 code instead:

- a group whose channels pass through an add (found in torch-pruning's trace, so any model with
  residual adds qualifies) is never removed physically: the residual stream keeps its width;
- each conv/linear layer whose output channels feed that add (a block's last conv, a projection
  shortcut) has its filters scored and ranked on their own, each filter one candidate in the
  global ranking, and a chosen filter is masked (``filter_masks``): its output is zero from then
  on, before the add;
- the stem, a layer that reads the model's input, is never pruned;
- every other group (a block's inner convs, a plain chain) is removed physically as in "tied".

The per-layer cap applies to a masked layer as to any: it keeps at least ``1 - max_fraction`` of
its dense filters unmasked, and at least one. ``round_to`` shapes physical removal only: masks
change no shape. A latency target cannot use masks (they save no time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fp.errors import ConfigError
from fp.pruning.filter_masks import filter_masks, mask_rows
from fp.pruning.groups import ChannelGroup
from fp.pruning.select import Single

RESIDUAL_MODES = ("tied", "masked")

#: modules whose affine parameters follow a masked layer's rows (their outputs are zero with them)
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class MaskedLayer:
    """A layer whose filters feed a residual add: masked one filter at a time."""

    name: str                 # the layer's weight name
    module: nn.Module
    params: list[str]         # parameters masked with each filter: weight, bias, following norm
    width: int                # output channels


@dataclass
class Residual:
    """A model's channel groups split for ``"masked"``: physically removable groups and layers
    to mask."""

    groups: list[ChannelGroup]
    masked: list[MaskedLayer] = field(default_factory=list)


def check_residual(residual: str) -> None:
    if residual not in RESIDUAL_MODES:
        raise ConfigError(f"residual must be one of {', '.join(map(repr, RESIDUAL_MODES))}, not "
                          f"{residual!r}.")


def feeds_add(group: ChannelGroup) -> bool:
    """True if the group's channels pass through an elementwise add (a residual connection)."""
    for item in group.handle:
        grad_fn = getattr(item.dep.target.module, "_grad_fn", None)  # torch-pruning: its name
        name = grad_fn if isinstance(grad_fn, str) else type(grad_fn).__name__
        if grad_fn is not None and name.startswith("AddBackward"):
            return True
    return False


def split_residual(model: nn.Module, groups: list[ChannelGroup]) -> Residual:
    """The groups to remove physically, and the layers to mask (see the module docstring)."""
    names = {module: name for name, module in model.named_modules()}
    split = Residual(groups=[])
    seen: set[str] = set()
    for group in groups:
        if not hasattr(group.handle, "_DG") or not feeds_add(group):
            split.groups.append(group)
            continue
        graph = group.handle._DG
        for weight, module in group.modules.items():
            node = graph.module2node.get(module)
            if node is None or not node.inputs or weight in seen:
                continue  # the stem reads the model's input: never pruned
            seen.add(weight)
            split.masked.append(MaskedLayer(weight, module, masked_params(module, node, names),
                                            int(module.weight.shape[0])))
    return split


def masked_params(module: nn.Module, node, names: dict[nn.Module, str]) -> list[str]:
    """The layer's own weight and bias, and the affine parameters of a norm that reads it."""
    prefix = names[module]
    params = [f"{prefix}.{key}" for key, p in module.named_parameters(recurse=False)
              if p is not None and p.dim() >= 1 and p.shape[0] == module.weight.shape[0]]
    for out in node.outputs:
        follower = out.module
        if isinstance(follower, NORMS) and follower in names:
            params += [f"{names[follower]}.{key}"
                       for key, p in follower.named_parameters(recurse=False)
                       if p.dim() == 1 and p.shape[0] == module.weight.shape[0]]
    return params


def mask_costs(layers: list[MaskedLayer], target_type: str, model: nn.Module,
               flops: dict[str, int] | None) -> list[Tensor]:
    """Per masked layer, the saving of masking each of its filters (see ``filter_masks``)."""
    params = dict(model.named_parameters())
    costs = []
    for layer in layers:
        if target_type == "filters":
            cost = 1.0
        elif target_type == "params":
            cost = sum(params[n].numel() / params[n].shape[0] for n in layer.params)
        else:
            cost = (flops or {}).get(layer.name.removesuffix(".weight"), 0) / layer.width
        costs.append(torch.full((layer.width,), float(cost), dtype=torch.float64))
    return costs


def ranked_filters(model: nn.Module, layers: list[MaskedLayer], filter_scores: dict[str, Tensor],
                   costs: list[Tensor], dense_widths: dict[str, int],
                   max_fraction: float) -> list[Single]:
    """Every unmasked filter of ``layers`` the cap lets go, as ``select_ranked``'s single
    candidates: (score, layer weight name, filter, the saving of masking it)."""
    masks = filter_masks(model)
    candidates = []
    for layer, cost in zip(layers, costs):
        if layer.name not in filter_scores:
            continue
        scores = filter_scores[layer.name].detach().float().cpu()
        kept = masks.get(layer.name, torch.ones(layer.width, dtype=torch.bool))
        dense = max(dense_widths.get(layer.name, layer.width), layer.width)
        allowed = math.floor(max_fraction * dense + 1e-9) - (dense - int(kept.sum()))
        room = max(0, min(allowed, int(kept.sum()) - 1))
        alive = sorted((float(scores[f]), f) for f in kept.nonzero().view(-1).tolist())
        candidates += [(score, layer.name, f, float(cost[f])) for score, f in alive[:room]]
    return candidates


def apply_selection(model: nn.Module, split: Residual,
                    chosen: dict[str, list[int]]) -> dict[str, Tensor]:
    """Mask the ``chosen`` filters; weight name -> the filters masked."""
    layers = {layer.name: layer for layer in split.masked}
    done = {}
    for name, filters in chosen.items():
        if filters:
            rows = torch.tensor(filters, dtype=torch.long)
            mask_rows(model, layers[name].params, rows)
            done[name] = rows
    return done


__all__ = ["MaskedLayer", "RESIDUAL_MODES", "Residual", "apply_selection", "check_residual",
           "feeds_add", "mask_costs", "ranked_filters", "split_residual"]
