"""The two ways an intervention takes the chosen filters out of a copy of the dense model:

- removal (b): ``fp.pruning.prune_filters`` with the run's options, exactly as a prune event
  removes them (surgery; residual-masked filters masked), done once per measure;
- zeroing (a): the same filters' weight rows and biases set to 0 in a copy without surgery (the
  BatchNorm that follows keeps its shift, so the channel carries a constant); a masked filter's
  masked entries (its norm's scale and shift too) are zeroed alike.

Removal also says which entries of the dense model survive it: the surgery runs on a float64 copy
that carries, for every parameter, the flat index of each entry in the dense parameter
(``carry``, pruned exactly as the parameter is: the removed filters' rows and the next layers'
input slices go), so ``survivors[name]`` indexes the dense parameter. Rows a filter mask switches
off are left out of the survivors: they are pruned parameters (``fp.pruning.filter_masks``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fp import pruning
from fp.nn import prunable_layers
from fp.pruning.filter_masks import filter_masks
from fp.scoring.graph import following_batchnorms


@dataclass
class Removal:
    """A copy of the dense model with the chosen filters removed as a run removes them."""

    model: nn.Module               # the pruned copy, in the dense model's dtype
    removed: dict[str, Tensor]     # weight name -> its out-channels removed (dense indices)
    masked: dict[str, Tensor]      # weight name -> its filters masked (prune.residual = "masked")
    survivors: dict[str, Tensor]   # parameter name -> flat dense indices of its live entries

    def filters(self, weight: str) -> Tensor:
        """The filters of ``weight`` taken out, removed or masked."""
        parts = [self.removed.get(weight), self.masked.get(weight)]
        return torch.cat([p for p in parts if p is not None] or [torch.zeros(0, dtype=torch.long)])


def remove(model: nn.Module, scores: dict[str, Tensor], fraction: float, options: dict,
           example: Tensor) -> Removal:
    """Remove the lowest-scored ``fraction`` of the dense filters from a copy of ``model``
    (``options``: ``prune_filters``' max_fraction, protected, round_to and residual)."""
    dtype = next(model.parameters()).dtype
    dense = pruning.dense_stats(model, example)
    wide = copy.deepcopy(model).double()
    index = {name: torch.arange(p.numel(), dtype=torch.float64, device=p.device).view_as(p)
             for name, p in wide.named_parameters()}
    result = pruning.prune_filters(wide, scores, fraction, example_inputs=example.double(),
                                   dense=dense, carry=index, target_type="filters", **options)
    survivors = {name: t.round().long() for name, t in live(wide, result.carried).items()}
    return Removal(wide.to(dtype), result.removed, result.masked, survivors)


def live(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each parameter-shaped tensor flattened, without the rows ``model``'s filter masks switch
    off: the entries of a pruned model that are still parameters."""
    masks = filter_masks(model)
    out = {}
    for name, tensor in tensors.items():
        keep = masks.get(name)
        out[name] = (tensor if keep is None else tensor[keep.to(tensor.device)]).reshape(-1)
    return out


def zeroed_entries(model: nn.Module, removal: Removal, example: Tensor, *,
                   norms: bool = True) -> dict[str, Tensor]:
    """Parameter name -> bool mask of the dense entries zeroing sets to 0: every removed filter's
    weight row and bias and, with ``norms``, the following BatchNorm's scale and shift; every
    masked filter's masked entries (its norm's too, whatever ``norms`` says: masking zeroes
    them)."""
    params = dict(model.named_parameters())
    bns = following_batchnorms(model, list(removal.removed), example) if norms else {}
    masks: dict[str, Tensor] = {}
    for weight, rows in removal.removed.items():
        layer = weight.removesuffix("weight")
        names = [weight, f"{layer}bias"]
        if bns.get(weight):
            names += [f"{bns[weight]}.weight", f"{bns[weight]}.bias"]
        for name in names:
            if name in params:
                entry = masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))
                entry[rows.to(entry.device)] = True
    for name, keep in filter_masks(removal.model).items():
        entry = masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))
        entry[~keep.to(entry.device)] = True
    return masks


def zeroed_copy(model: nn.Module, entries: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with ``entries`` set to 0, no surgery."""
    zeroed = copy.deepcopy(model)
    params = dict(zeroed.named_parameters())
    with torch.no_grad():
        for name, mask in entries.items():
            params[name][mask] = 0
    return zeroed


def first_convs(model: nn.Module, count: int = 2) -> list[str]:
    """The weight names of the first ``count`` prunable convolutions, in module order."""
    convs = [name for name, layer in prunable_layers(model)
             if isinstance(layer, nn.modules.conv._ConvNd)]
    return convs[:count]
