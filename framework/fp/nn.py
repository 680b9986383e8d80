"""Facts about networks that scoring, pruning, the engine and plugins share. A leaf: it imports
only torch and fp.errors, so every layer of fp (and any plugin) can use it.

- the granularities a measure scores at and a prune event removes at: ``FILTER`` (whole output
  channels) and ``WEIGHT`` (single weights);
- the prunable layers: conv (1-3d) and linear, whose weights are scored and whose output channels
  are the filters;
- ``filter_sums``: a weight-shaped tensor summed per filter;
- ``eval_mode``: a model in eval mode for a block, every module's own flag restored after;
- the tempered loss: the cross-entropy of logits/T, which training, evaluation and scoring use;
- memory layouts: which tensors of a model are channels-last (``channels_last_names``), so that
  surgery, saving and loading give every tensor back the layout it had (``to_channels_last``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fp.errors import ConfigError

FILTER = "filter"
WEIGHT = "weight"
GRANULARITIES = (FILTER, WEIGHT)

#: the layers whose weights are scored and whose output channels (filters) are pruned
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_granularity(granularity: str) -> None:
    """Refuse a granularity other than FILTER and WEIGHT, in one sentence."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is not one of "
                          f"{', '.join(map(repr, GRANULARITIES))}.")


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(weight parameter name, layer) for every prunable layer, in module order."""
    for name, module in unwrapped(model).named_modules():
        if isinstance(module, PRUNABLE_LAYERS) and isinstance(module.weight, Tensor):
            yield (f"{name}.weight" if name else "weight"), module


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every prunable layer's weight, by parameter name, in module order."""
    return {name: layer.weight for name, layer in prunable_layers(model)}


def filter_sums(values: Tensor) -> Tensor:
    """Per filter, the sum of a weight-shaped tensor over every dim but the output channel."""
    return values.flatten(1).sum(1) if values.dim() > 1 else values


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode, then give every submodule its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:  # the attribute, not train(): that would recurse
            module.training = training


def tempered_loss(logits: Tensor, targets: Tensor, temperature: float,
                  reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits/T (the mean over the batch, or as ``reduction`` says)."""
    return F.cross_entropy(logits / temperature, targets, reduction=reduction)


def batch_loss(model: nn.Module, x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The tempered loss of ``model`` on one batch, the mean over its samples."""
    return tempered_loss(model(x), y, temperature)


def is_channels_last(tensor: Tensor) -> bool:
    """Whether ``tensor`` is laid out channels-last and not also contiguous (a 4-d tensor whose
    size-1 dimensions make both layouts the same is neither: no layout can be lost)."""
    return (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
            and not tensor.is_contiguous())


def channels_last_names(model: nn.Module) -> list[str]:
    """The parameters and buffers of ``model`` that are laid out channels-last, by name."""
    return [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
            if is_channels_last(tensor)]


def to_channels_last(model: nn.Module, names) -> None:
    """Lay the named 4-d parameters and buffers of ``model`` out channels-last, in place (the
    same Parameter objects, new storage); names ``model`` no longer has are skipped."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in names:
        tensor = tensors.get(name)
        if tensor is not None and tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


__all__ = ["FILTER", "GRANULARITIES", "PRUNABLE_LAYERS", "WEIGHT", "batch_loss", "channels_last_names",
           "check_granularity", "eval_mode", "filter_sums", "is_channels_last", "prunable_layers",
           "prunable_weights", "tempered_loss", "to_channels_last", "unwrapped"]
