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

Tied channels are slots too. Where two of the root's channels reach the same channel of one
layer (GhostNet's ``cat([x, depthwise(x)])``: channel ``j`` and ``j + C/2`` of the concatenation
both come from channel ``j`` of ``x``), removing either removes that layer's channel, so they
can only go together. torch-pruning keeps one root channel per layer channel when it merges the
paths of a group, which hides the tie (and let a selection empty ``x``'s layer); ``ties``
records what the merge drops, and the group's slots are made wide enough to hold every tie
(``tied_slots``). A group whose ties fit no slot pattern is left unpruned.

Every member keeps at least one channel, not only the group: a member that covers part of the
group (one input of a concatenation that a residual add ties to a wider layer) is counted on its
own (``member_slots``, used by ``select``).

A group whose channels cross a split along the channel dim (``torch.split``, ``chunk``) is left
unpruned (``traced_groups``): the forward splits by sizes fixed in its code, which surgery cannot
change. Its trace stops at the split, so such models are analysed as fast as any other.

The layer whose output is the model's output (the classifier, found in the traced graph, not by
name) and layers named in ``protected`` never lose output channels; they may lose input channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.dependency.group import Group
from torch_pruning.dependency.index_mapping import _SplitIndexMapping

from fp.errors import PruningError
from fp.nn import PRUNABLE_LAYERS, prunable_layers
from fp.pruning.heads import attention_modules, head_parts, reconcile
from fp.pruning.trace import Stopped, budget, build_graph, reason, stopping_at

#: torch-pruning's index mappings through a split along the channel dim (``traced_groups``)
SPLITS = (_SplitIndexMapping,)


@dataclass
class ChannelGroup:
    """Output channels removed together; see the module docstring."""

    root: str                       # weight name of the layer the group was traced from
    width: int                      # channels of the group (the root's output channels)
    members: dict[str, Tensor]      # weight name -> member channel of each group channel (-1: none)
    modules: dict[str, nn.Module]   # weight name -> its layer
    interleave: int                 # channels per slot: G of the grouped convs, or wider for ties
    handle: Any                     # torch-pruning's Group with every channel (``handle._DG``)

    @property
    def slots(self) -> int:
        return self.width // self.interleave

    def member_slots(self) -> dict[str, Tensor]:
        """Weight name -> the slot of each of its output channels (-1: outside the group)."""
        found = {}
        for name, channel_map in self.members.items():
            slot_of = torch.full((int(self.modules[name].weight.shape[0]),), -1, dtype=torch.long)
            present = (channel_map >= 0).nonzero().view(-1)
            slot_of[channel_map[present]] = present % self.slots
            found[name] = slot_of
        return found

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
    record_ties()
    try:
        with budget(graph, model):
            handles = list(traced_groups(graph, kept + output_layers(graph)))
    except PruningError:
        raise
    except Exception as exc:  # index bookkeeping that explodes on nested reshapes, ...
        raise PruningError(f"torch-pruning cannot group the channels of {type(model).__name__}: "
                           f"{reason(exc)}.") from exc
    groups = [describe(handle, graph, names) for handle in handles
              if not any(item.dep.target.module in attention for item in handle)]
    groups += [ChannelGroup(*parts) for parts in head_parts(graph, attention, kept)]
    return [group for group in groups if group is not None]


def traced_groups(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> Iterator[Group]:
    """torch-pruning's groups (``get_all_groups``: one per prunable layer not yet in a group,
    traced from its output channels, none that holds an ``ignored`` layer), less the groups whose
    channels cross a split along the channel dim (Res2Net's ``split(out, width)``, CSPNet's
    halves, MixNet's kernel groups): each is dropped as soon as its trace reaches the split."""
    ignored_ids = {id(m) for m in (*ignored, *graph.IGNORED_LAYERS_IN_TRACING)}
    visited: set[int] = set()
    for module in list(graph.module2node):
        if id(module) in ignored_ids | visited or not isinstance(module, PRUNABLE_LAYERS):
            continue
        pruner = graph.get_pruner_of_module(module)
        channels = None if pruner is None else pruner.get_out_channels(module)
        if channels is None:
            continue
        try:
            with stopping_at(SPLITS):
                group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                                list(range(channels)))
        except Stopped:
            continue
        outputs = {id(item.dep.target.module) for item in group
                   if graph.is_out_channel_pruning_fn(item.dep.handler)}
        visited |= outputs
        if not outputs & ignored_ids:
            yield group


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
    pairs, modules, interleave = {}, {}, 1
    for item in handle:
        module, is_out = item.dep.target.module, graph.is_out_channel_pruning_fn(item.dep.handler)
        if not within_width(graph, module, is_out, item.idxs):
            return None  # torch-pruning mapped indices past the layer's channels
        if is_out and module in names:
            pairs[names[module]] = list(zip(item.idxs, item.root_idxs))
            modules[names[module]] = module
        interleave = math.lcm(interleave, channel_blocks(graph, module, is_out))
    if not pairs or width % interleave:
        return None  # nothing scorable, or blocks torch-pruning cannot shrink evenly
    slots = tied_slots(ties(handle), width, interleave)
    if slots < 2:
        return None  # its ties leave one slot, which the group must keep: nothing can go
    members = {name: channel_map(found, width, slots, slots != width // interleave)
               for name, found in pairs.items()}
    root = names.get(handle[0].dep.target.module, next(iter(members)))
    return ChannelGroup(root, width, members, modules, width // slots, handle)


def within_width(graph: tp.DependencyGraph, module: Any, is_out: bool, idxs: list[int]) -> bool:
    """Whether every index of a group item names a channel the layer has."""
    if not isinstance(module, nn.Module) or not idxs:
        return True
    try:
        channels = graph.get_out_channels(module) if is_out else graph.get_in_channels(module)
    except Exception:  # a layer torch-pruning has no width for: nothing to check against
        return True
    return channels is None or (min(idxs) >= 0 and max(idxs) < channels)


def ties(handle) -> list[tuple[int, int]]:
    """Pairs of root channels that reach one channel of the same layer, so go together: those
    torch-pruning's merge dropped (``record_ties``) and those left in one item's index list."""
    found = list(getattr(handle, "fp_ties", ()))
    for item in handle:
        first: dict[int, int] = {}
        for idx, root in zip(item.idxs, item.root_idxs):
            if root is None:
                continue
            if first.setdefault(idx, root) != root:
                found.append((first[idx], root))
    return found


def tied_slots(pairs: list[tuple[int, int]], width: int, interleave: int) -> int:
    """The most slots a group of ``width`` channels can have when its channels must shrink in
    ``interleave`` blocks and each tied pair must fall in one slot (slot ``c % slots`` holds
    channel ``c``): the largest divisor of ``width / interleave`` that divides every pair's
    distance."""
    slots = width // interleave
    for a, b in pairs:
        slots = math.gcd(slots, abs(a - b))
        if slots == 1:
            break
    return slots


def channel_map(pairs: list[tuple[int, int]], width: int, slots: int, tied: bool) -> Tensor:
    """The member channel of each group channel (-1: none). Untied, that is the pair of the root
    channel. Tied, a root may reach several member channels and several roots one: each member
    channel is given to one root of its slot, so that each is counted once."""
    found = [-1] * width
    if not tied:
        for idx, root in pairs:
            if root is not None:
                found[root] = idx
        return torch.tensor(found, dtype=torch.long)
    used, left = set(), []
    for idx, root in pairs:
        if root is None or idx in used:
            continue
        if found[root] < 0:
            found[root] = idx
            used.add(idx)
        else:
            left.append((idx, root))
    for idx, root in left:
        free = next((c for c in range(root % slots, width, slots) if found[c] < 0), None)
        if idx not in used and free is not None:
            found[free] = idx
            used.add(idx)
    return torch.tensor(found, dtype=torch.long)


def record_ties() -> None:
    """Make torch-pruning's group merge note the root channels it drops: when two paths reach
    one channel of a layer from different root channels, it keeps the first root only. The
    merge itself is unchanged; the dropped pairs go to ``group.fp_ties``."""
    merge = Group.add_and_merge
    if getattr(merge, "fp_records_ties", False):
        return

    def add_and_merge(self, dep, idxs):
        for held_dep, held in self._group:
            if held_dep.target == dep.target and held_dep.handler == dep.handler:
                roots = {i.idx: i.root_idx for i in held if hasattr(i, "root_idx")}
                for i in idxs:
                    root = getattr(i, "root_idx", None)
                    if root is not None and roots.setdefault(i.idx, root) not in (root, None):
                        vars(self).setdefault("fp_ties", []).append((roots[i.idx], root))
                break
        return merge(self, dep, idxs)

    add_and_merge.fp_records_ties = True
    Group.add_and_merge = add_and_merge


def channel_blocks(graph: tp.DependencyGraph, module: Any, is_out: bool) -> int:
    """G for a grouped conv or GroupNorm (1 otherwise): its channels shrink block by block."""
    if not isinstance(module, nn.Module):
        return 1
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
        return 1  # depthwise: each channel is its own block, any subset can go
    pruner = graph.get_pruner_of_module(module)
    blocks = getattr(pruner, "get_out_channel_groups" if is_out else "get_in_channel_groups", None)
    return int(blocks(module)) if blocks is not None else 1
