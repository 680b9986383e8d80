"""Filter masks: filters switched off in place instead of removed (``prune.residual = "masked"``).

A model's filter masks live in ``model.fp_filter_masks``: parameter name -> bool vector over the
parameter's first dim (True = kept). Masking filter ``c`` of a conv/linear layer masks row ``c``
of its weight and bias and entry ``c`` of the affine parameters of the norm that directly follows
it, so the channel's output is exactly zero in training and eval mode alike (a norm of an
all-zero channel with zero scale and shift gives zero). The masked rows are zeroed again, with
their optimizer state (momentum, Adam moments), after every optimizer step, so momentum and
weight decay never revive them; the masks are saved with the model (``fp.save``, checkpoints).

How masked filters count (``stats``): a masked filter of a prunable weight is a pruned filter; its
masked parameter entries (the weight row, bias, norm scale and shift) are pruned parameters; and
its share of its layer's FLOPs (the layer's FLOPs / its output channels) is pruned FLOPs. Masks do
not make the model faster: the zero rows are still computed.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fp.errors import PruningError

ATTRIBUTE = "fp_filter_masks"


def filter_masks(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s filter masks (parameter name -> bool per row, True = kept); {} if none."""
    return getattr(model, ATTRIBUTE, None) or {}


def set_filter_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Give ``model`` the filter ``masks`` (checked against its parameters) and apply them."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or mask.dim() != 1 or len(mask) != params[name].shape[0]:
            shape = tuple(params[name].shape) if name in params else None
            raise PruningError(f"the filter mask {name!r} (length {len(mask)}) does not fit the "
                               f"model's parameter of that name (shape {shape}).")
    if masks:
        kept = {name: mask.detach().bool().cpu() for name, mask in masks.items()}
        setattr(model, ATTRIBUTE, kept)
        apply_filter_masks(model)
    elif hasattr(model, ATTRIBUTE):
        delattr(model, ATTRIBUTE)


def mask_rows(model: nn.Module, names: list[str], rows: Tensor) -> None:
    """Mask ``rows`` of every parameter in ``names`` (a layer and the norm that follows it)."""
    params = dict(model.named_parameters())
    masks = dict(filter_masks(model))
    for name in names:
        mask = masks.get(name)
        if mask is None:
            mask = torch.ones(params[name].shape[0], dtype=torch.bool)
        mask = mask.clone()
        mask[rows.cpu()] = False
        masks[name] = mask
    set_filter_masks(model, masks)


def apply_filter_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero the masked rows and, with ``optimizer``, the same rows of its per-parameter state.
    Call it after every optimizer step (the engine does)."""
    masks = filter_masks(model)
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            param = params[name]
            pruned = ~mask.to(param.device)
            param[pruned] = 0
            state = optimizer.state.get(param, {}) if optimizer is not None else {}
            for value in state.values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value[pruned] = 0


def masked_filters(model: nn.Module, weight_names) -> dict[str, int]:
    """Weight name -> how many of its filters are masked, for the given prunable weights."""
    masks = filter_masks(model)
    return {name: int((~masks[name]).sum()) for name in weight_names if name in masks}


def masked_filter_counts(model: nn.Module) -> dict[str, int]:
    """Weight name -> masked filters, for every masked conv/linear weight of ``model``."""
    from fp.nn import prunable_layers

    names = [name for name, _ in prunable_layers(model)]
    return {name: count for name, count in masked_filters(model, names).items() if count}


def masked_params(model: nn.Module) -> int:
    """Parameter entries in masked rows: what the masks prune."""
    params = dict(model.named_parameters())
    total = 0
    for name, mask in filter_masks(model).items():
        param = params[name]
        total += int((~mask).sum()) * (param.numel() // max(param.shape[0], 1))
    return total


__all__ = ["apply_filter_masks", "filter_masks", "mask_rows", "masked_filter_counts",
           "masked_filters", "masked_params", "set_filter_masks"]
