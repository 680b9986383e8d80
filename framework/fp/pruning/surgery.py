"""Physical removal of channels with torch-pruning, in place.

torch-pruning rebuilds every pruned parameter as a new ``nn.Parameter`` and prunes its ``.grad``
with the same indices (``BasePruningFunc._prune_parameter_and_grad``). Tensors that must follow
the parameters (SGD momentum buffers, keyed by parameter name) ride along in ``.grad`` during the
surgery; afterwards every ``.grad`` is cleared, since the optimizer is rebuilt for the new
parameters anyway.

torch-pruning's new tensors are contiguous whatever the old ones were. Surgery gives each pruned
parameter, buffer and carried tensor the memory layout its original had (channels-last stays
channels-last), so a channels-last model trains on in its own layout after every event.

Tracing cannot see everything: a reshape that hard-codes a channel count, a tensor built outside
autograd, a ``.detach()`` between layers. They only show once channels are gone, so every surgery
of a prune event is followed by one forward pass of one example (``prune_and_run``), and a model
it breaks is put back as it was (``Snapshot``) and refused with a PruningError.
"""
from __future__ import annotations

import copy
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fp.errors import PruningError
from fp.pruning.heads import HeadHandle
from fp.pruning.groups import ChannelGroup, channel_groups
from fp.pruning.trace import failed_in, reason
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


class Snapshot:
    """What it takes to put ``model`` back as it was, held by reference, not copied.

    torch-pruning never writes into a tensor: it builds new Parameters and buffers and assigns
    them, and changes plain attributes (``out_channels``, ``num_features``, ``num_heads``, a
    ``forward`` of ``windows``). So each module's attributes and its parameter, buffer and child
    tables, the parameters' ``.grad`` and their storage (``to_channels_last`` swaps it) are
    enough, kept as references: taking a snapshot costs no tensor copy. The one write into a
    tensor is a filter mask's zeroing (``residual="masked"``): ``keep_rows`` saves those rows first.
    """

    _TABLES = ("_parameters", "_buffers", "_modules")

    def __init__(self, model: nn.Module):
        self.modules = [(module, dict(vars(module)),
                         {table: dict(vars(module)[table]) for table in self._TABLES})
                        for module in model.modules()]
        tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
        self.tensors = [(t, t.data, t.grad) for t in tensors]
        self.rows: list[tuple[Tensor, Tensor, Tensor]] = []

    def keep_rows(self, model: nn.Module, names: Iterable[str], rows: Tensor) -> None:
        """Save ``rows`` of the named parameters before they are masked (zeroed in place)."""
        params = dict(model.named_parameters())
        for name in names:
            index = rows.to(params[name].device)
            self.rows.append((params[name], index, params[name].detach()[index].clone()))

    def restore(self) -> None:
        for module, attributes, tables in self.modules:
            for key in [key for key in vars(module) if key not in attributes]:
                del vars(module)[key]
            vars(module).update(attributes)
            for table, entries in tables.items():
                vars(module)[table].clear()
                vars(module)[table].update(entries)
        for tensor, data, grad in self.tensors:
            tensor.data = data
            tensor.grad = grad
        with torch.no_grad():
            for param, index, values in reversed(self.rows):
                param[index] = values


def prune_and_run(model: nn.Module, groups: list[ChannelGroup], selection: dict[int, list[int]],
                  example_inputs: Tensor, *, carry: dict[str, Tensor] | None = None) -> PruneResult:
    """``prune_channels``, then one forward pass of the first example (eval mode, no grad).

    The forward pass is the check that surgery kept the model working (see the module
    docstring): it costs one small forward and runs the very model the user gets, so it judges
    the channels actually removed, not a stand-in. A failure of either is a PruningError; the
    caller puts the model back (``Snapshot``), since only it knows the state to go back to (a
    prune event's start, before its first round)."""
    before = empty_layers(model)
    try:
        result = prune_channels(model, groups, selection, carry=carry)
        check_widths(model, before)
        with torch.no_grad(), eval_mode(model):
            model(example_inputs[:1])
    except PruningError:
        raise
    except Exception as exc:
        raise surgery_error(model, exc) from exc
    return result


def empty_layers(model: nn.Module) -> dict[str, str]:
    """Every module without a channel (a parameter or buffer with a zero dim, or a zero channel
    count): name -> its name and class, as an error names it."""
    found = {}
    for name, module in model.named_modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        counts = [getattr(module, key, None) for key in WIDTHS]
        if any(t.dim() and 0 in t.shape for t in tensors) or 0 in counts:
            found[name] = f"{name or 'the top-level module'!r} ({type(module).__name__})"
    return found


#: the attributes that hold a layer's channel count
WIDTHS = ("in_channels", "out_channels", "in_features", "out_features", "num_features",
          "num_heads")


def check_widths(model: nn.Module, before: dict[str, str]) -> None:
    """Refuse a surgery that left a layer with no channels (``before``: the modules that had
    none already): the forward check might not reach it (a branch the example does not take),
    and no later event could prune it again."""
    emptied = [what for name, what in empty_layers(model).items() if name not in before]
    if emptied:
        raise PruningError(f"pruning {type(model).__name__} would leave {emptied[0]} with no "
                           f"channels, so it was stopped; the model is left as it was.")


def surgery_error(model: nn.Module, exc: BaseException) -> PruningError:
    """The refusal of a model whose forward fails after surgery, naming the module it fails in."""
    return PruningError(f"{type(model).__name__} cannot be pruned: its forward pass fails"
                        f"{failed_in(model, exc)} once channels are removed ({reason(exc)}), so "
                        f"torch-pruning's trace misses a dependency (a reshape with a fixed "
                        f"channel count, a tensor built outside autograd, ...); the model is left "
                        f"as it was.")


#: models whose surgery was already tried on a copy, with the protected names it was tried with
_CHECKED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def check_surgery(model: nn.Module, example_inputs: Tensor, protected: Iterable[str] = ()) -> None:
    """Remove one slot of every group from a copy of ``model`` and run it, once per model.

    For callers that prune copies of ``model`` and time them (``latency``): the copies must run
    before any of them is chosen. A prune event's own surgery is checked afterwards, on the
    model itself, by ``prune_and_run``, which needs no copy.
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
    prune_and_run(trial, groups, selection, example_inputs)  # the copy is thrown away either way
    _CHECKED[model] = protected


__all__ = ["PruneResult", "Snapshot", "check_surgery", "check_widths", "empty_layers",
           "prune_and_run", "prune_channels", "prune_group", "surgery_error"]
