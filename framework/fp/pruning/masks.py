"""Weight granularity: masks instead of surgery (unstructured pruning, iterative magnitude pruning).

A mask is a bool tensor shaped like its weight, True = kept, False = pruned. Weights are ranked
globally across layers like filters are; once masked a weight stays masked, and a layer never
loses more than ``max_fraction`` of its weights (at least one is always kept).

A model's weight masks live on the model, in ``model.fp_masks`` (parameter name -> mask), whether
it was pruned by ``fp.prune`` or in a run (``run.masks`` reads and sets the same attribute), so
they travel with it: into checkpoints and saved models (``fp.save``), through ``copy.deepcopy``.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from fp.errors import PruningError
from fp.pruning.groups import matches
from fp.pruning.select import DEFAULT_MAX_FRACTION, check_fraction, check_target
from fp.nn import prunable_layers
from fp.run import WEIGHT_MASKS

#: how far short of the target (a fraction of the prunable weights) the cap may leave a mask
TOLERANCE = 0.01
#: the model attribute that holds its weight masks (``fp.run.Run.masks`` reads the same one)
ATTRIBUTE = WEIGHT_MASKS


def masks_of(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weight masks (parameter name -> bool mask, True = kept); {} if none."""
    return getattr(model, ATTRIBUTE, None) or {}


def set_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Give ``model`` the weight ``masks`` ({} or None takes them away). Apply them with
    ``apply_masks``."""
    if masks:
        setattr(model, ATTRIBUTE, masks)
    elif hasattr(model, ATTRIBUTE):
        delattr(model, ATTRIBUTE)


def weight_masks(weight_scores: dict[str, Tensor], target: float, *, protected: Iterable[str] = (),
                 current: dict[str, Tensor] | None = None,
                 max_fraction: float = DEFAULT_MAX_FRACTION) -> dict[str, Tensor]:
    """Masks of every scored, unprotected weight such that ``target`` of them is masked in all
    (cumulative: ``current`` masks stay masked and count towards it); lowest scores go first."""
    check_target(target)
    check_fraction(max_fraction)
    protected = tuple(protected)
    names = [name for name in weight_scores if not matches(name, protected)]
    masks = {name: start_mask(name, weight_scores[name], current) for name in names}
    total = sum(mask.numel() for mask in masks.values())
    need = math.floor(target * total + 0.5) - sum(int((~mask).sum()) for mask in masks.values())
    if need <= 0:
        return masks
    scores, owners, positions = candidates(names, weight_scores, masks, max_fraction)
    if len(scores) < need - TOLERANCE * total:
        raise PruningError(f"a target of {target:g} of the weights cannot be reached: the "
                           f"per-layer cap max_fraction={max_fraction:g} leaves too few to mask.")
    chosen = torch.sort(scores, stable=True).indices[:need]  # ties: earlier layer, then position
    chosen_owners, chosen_positions = owners[chosen], positions[chosen]
    for owner, name in enumerate(names):
        masks[name].view(-1)[chosen_positions[chosen_owners == owner]] = False
    return masks


def start_mask(name: str, scores: Tensor, current: dict[str, Tensor] | None) -> Tensor:
    if torch.isnan(scores).any():
        raise PruningError(f"weight scores for {name!r} contain NaN; the measure failed on it.")
    if not current or name not in current:
        return torch.ones_like(scores, dtype=torch.bool)
    if current[name].shape != scores.shape:
        raise PruningError(f"the current mask of {name!r} has shape {tuple(current[name].shape)}, "
                           f"its scores {tuple(scores.shape)}.")
    return current[name].to(device=scores.device, dtype=torch.bool).clone()


def candidates(names: list[str], weight_scores: dict[str, Tensor], masks: dict[str, Tensor],
               max_fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    """(score, layer number, flat position) of each unmasked weight the per-layer cap lets go."""
    scores, owners, positions = [], [], []
    device = weight_scores[names[0]].device
    for owner, name in enumerate(names):
        mask = masks[name].view(-1)
        cap = min(math.floor(max_fraction * mask.numel() + 1e-9), mask.numel() - 1)
        room = cap - int((~mask).sum())
        if room <= 0:
            continue
        alive = mask.nonzero().view(-1)
        alive_scores = weight_scores[name].detach().float().reshape(-1)[alive]
        lowest = torch.sort(alive_scores, stable=True).indices[:room]
        scores.append(alive_scores[lowest].to(device))
        positions.append(alive[lowest].to(device))
        owners.append(torch.full((len(lowest),), owner, dtype=torch.long, device=device))
    if not scores:
        empty = torch.zeros(0, device=device)
        return empty, empty.long(), empty.long()
    return torch.cat(scores), torch.cat(owners), torch.cat(positions)


def apply_masks(model: nn.Module, masks: dict[str, Tensor],
                optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero the masked weights and, with ``optimizer``, their entries in its per-parameter state
    (SGD momentum, Adam moments). Call it after every optimizer step: momentum and weight decay
    would otherwise revive the masked weights."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise PruningError(f"the mask {name!r} names no parameter of "
                                   f"{type(model).__name__}.")
            param, pruned = params[name], ~mask.to(params[name].device, torch.bool)
            param.masked_fill_(pruned, 0)
            state = optimizer.state.get(param, {}) if optimizer is not None else {}
            for value in state.values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.masked_fill_(pruned, 0)


def sparsity(model: nn.Module, masks: dict[str, Tensor]) -> float:
    """The fraction of the model's prunable (conv and linear) weights that are masked."""
    total = sum(layer.weight.numel() for _, layer in prunable_layers(model))
    masked = sum(int((~mask.bool()).sum()) for mask in masks.values())
    return masked / total if total else 0.0
