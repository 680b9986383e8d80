"""Physical removal of channels with torch-pruning, in place.

torch-pruning rebuilds every pruned parameter as a new ``nn.Parameter`` and prunes its ``.grad``
with the same indices (``BasePruningFunc._prune_parameter_and_grad``). Tensors that must follow
the parameters (SGD momentum buffers, keyed by parameter name) ride along in ``.grad`` during the
surgery; afterwards every ``.grad`` is cleared, since the optimizer is rebuilt for the new
parameters anyway.

torch-pruning's new tensors are contiguous whatever the old ones were. Surgery gives each pruned
parameter, buffer and carried tensor the memory layout its original had (channels-last stays
channels-last), so a channels-last model trains on in its own layout after every event.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor, nn

from fp.errors import PruningError
from fp.pruning.heads import HeadHandle
from fp.pruning.groups import ChannelGroup, channel_groups
from fp.pruning.trace import reason
from fp.nn import channels_last_names, eval_mode, to_channels_last
from fp.pruning.stats import filter_widths


@dataclass
class PruneResult:
    """What a prune event did (the fields ``fp.PruneEvent`` reports to plugins)."""

    removed: dict[str, Tensor] = field(default_factory=dict)   # weight name -> removed out-channels
    widths_before: dict[str, int] = field(default_factory=dict)  # weight name -> out-channels
    widths_after: dict[str, int] = field(default_factory=dict)
    carried: dict[str, Tensor] = field(default_factory=dict)   # param name -> carry tensor, pruned
    masked: dict[str, Tensor] = field(default_factory=dict)    # weight name -> filters masked


def prune_channels(model: nn.Module, groups: list[ChannelGroup], selection: dict[int, list[int]],
                   *, carry: dict[str, Tensor] | None = None) -> PruneResult:
    """Remove ``selection`` ({group index: channel indices}) from ``model`` in place; each
    ``carry`` tensor (same shape as the parameter it is keyed by) is pruned like its parameter."""
    widths_before = filter_widths(model)
    channels_last = set(channels_last_names(model))
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    stage_carry(model, carry or {})
    removed: dict[str, Tensor] = {}
    for index, channels in sorted(selection.items()):
        if channels:
            removed.update(prune_group(groups[index], channels))
    params = dict(model.named_parameters())
    carried = {name: restore_carry(params[name].grad, tensor, name in channels_last)
               for name, tensor in (carry or {}).items()}
    for name, param in params.items():
        param.grad = None
        param.requires_grad_(requires_grad.get(name, True))  # new Parameters default to True
    to_channels_last(model, channels_last)
    return PruneResult(removed, widths_before, filter_widths(model), carried)


def prune_group(group: ChannelGroup, channels: list[int]) -> dict[str, Tensor]:
    """Prune ``channels`` (group coordinates) of ``group``; the removed channels per member."""
    if isinstance(group.handle, HeadHandle):
        return group.handle.remove(channels)
    graph, root = group.handle._DG, group.handle[0].dep
    # derived afresh: earlier groups of this event may have shifted concat offsets
    pruning = graph.get_pruning_group(root.target.module, root.handler, list(channels))
    names = {module: name for name, module in group.modules.items()}
    removed = {}
    for item in pruning:
        module = item.dep.target.module
        if module in names and graph.is_out_channel_pruning_fn(item.dep.handler):
            removed[names[module]] = torch.tensor(sorted(item.idxs), dtype=torch.long)
    pruning.prune()
    return removed


def stage_carry(model: nn.Module, carry: dict[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    for param in params.values():
        param.grad = None
    for name, tensor in carry.items():
        if name not in params or params[name].shape != tensor.shape:
            shape = tuple(params[name].shape) if name in params else None
            raise PruningError(f"carry tensor {name!r} has shape {tuple(tensor.shape)}, but the "
                               f"model's parameter of that name has shape {shape}.")
        params[name].grad = tensor.detach().to(params[name].device, params[name].dtype)


def restore_carry(pruned: Tensor | None, original: Tensor, channels_last: bool = False) -> Tensor:
    """The carried tensor after surgery, on its original device and dtype, in the layout of the
    parameter it belongs to."""
    tensor = original if pruned is None else pruned.to(original.device, original.dtype)
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last else tensor


#: models whose surgery was already tried on a copy, with the protected names it was tried with
_CHECKED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def check_surgery(model: nn.Module, example_inputs: Tensor, protected: Iterable[str] = ()) -> None:
    """Remove one slot of every group from a copy of ``model`` and run it, once per model.

    Tracing cannot see everything: a reshape that hard-codes a channel count, a tensor built
    outside autograd, a ``.detach()`` between layers. They only show once channels are gone, so
    they are caught on a copy, before the real model is touched.
    """
    protected = tuple(protected)
    if _CHECKED.get(model) == protected:
        return
    try:
        trial = copy.deepcopy(model)
    except Exception:  # a model that cannot be copied is pruned without the trial run
        return
    groups = channel_groups(trial, example_inputs, protected=protected)
    selection = {i: g.slot_channels(g.slots - 1) for i, g in enumerate(groups) if g.slots > 1}
    try:
        prune_channels(trial, groups, selection)
        with torch.no_grad(), eval_mode(trial):
            trial(example_inputs[:1])
    except Exception as exc:
        raise PruningError(f"{type(model).__name__} cannot be pruned: its forward pass fails once "
                           f"channels are removed ({reason(exc)}), so torch-pruning's trace misses "
                           f"a dependency (a reshape with a fixed channel count, a tensor built "
                           f"outside autograd, ...).") from exc
    _CHECKED[model] = protected


__all__ = ["PruneResult", "check_surgery", "prune_channels", "prune_group"]
