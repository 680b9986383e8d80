"""Which channels go: one global ranking across layers (the paper's protocol, Sec. 5).

Every slot of every group (see ``groups``) is ranked by its score, lowest first; ties go to the
earlier group, then the earlier slot, so a selection never depends on anything but the scores.
Slots are taken in that order until their saving covers ``need`` (in filters, parameters or
FLOPs). A per-layer cap keeps each group alive: it never loses more than ``max_fraction`` of
its DENSE width in all (so repeated prune events cannot hollow a layer out) and keeps at least
one slot.
"""
from __future__ import annotations

import math

from torch import Tensor

from fp.errors import ConfigError
from fp.pruning.groups import ChannelGroup

TARGET_TYPES = ("filters", "params", "flops")
DEFAULT_MAX_FRACTION = 0.95


def removable_slots(group: ChannelGroup, dense_width: int, max_fraction: float) -> int:
    """How many more slots ``group`` may lose under the cap."""
    dense_slots = max(dense_width // group.interleave, group.slots)
    already = dense_slots - group.slots
    allowed = math.floor(max_fraction * dense_slots + 1e-9) - already
    return max(0, min(allowed, group.slots - 1))


def ranked_slots(groups: list[ChannelGroup], filter_scores: dict[str, Tensor],
                 dense_widths: dict[str, int], max_fraction: float) -> list[tuple[float, int, int]]:
    """(score, group index, slot) of every slot the cap lets go, lowest score first."""
    candidates = []
    for index, group in enumerate(groups):
        scores = group.slot_scores(filter_scores)
        if scores is None:
            continue
        room = removable_slots(group, dense_widths.get(group.root, group.width), max_fraction)
        scored = sorted((float(s), index, slot) for slot, s in enumerate(scores.tolist())
                        if not math.isnan(s))
        candidates.extend(scored[:room])  # a group's lowest slots come first globally anyway
    candidates.sort()
    return candidates


def select_channels(groups: list[ChannelGroup], filter_scores: dict[str, Tensor], need: float,
                    slot_costs: list[Tensor], *, dense_widths: dict[str, int] | None = None,
                    max_fraction: float = DEFAULT_MAX_FRACTION) -> dict[int, list[int]]:
    """{group index: sorted channel indices} whose saving first reaches ``need``; fewer when
    the cap runs out of slots. ``dense_widths`` (weight name -> dense output channels) anchor
    the cap; a group missing from it counts its current width as dense."""
    check_fraction(max_fraction)
    chosen: dict[int, list[int]] = {}
    saved = 0.0
    for _, index, slot in ranked_slots(groups, filter_scores, dense_widths or {}, max_fraction):
        if saved >= need:
            break
        chosen.setdefault(index, []).extend(groups[index].slot_channels(slot))
        saved += float(slot_costs[index][slot])
    return {index: sorted(channels) for index, channels in sorted(chosen.items())}


def selection_saving(selection: dict[int, list[int]], groups: list[ChannelGroup],
                     slot_costs: list[Tensor]) -> float:
    """The estimated saving of ``selection``."""
    total = 0.0
    for index, channels in selection.items():
        slots = {channel % groups[index].slots for channel in channels}
        total += float(sum(slot_costs[index][slot] for slot in slots))
    return total


def check_fraction(max_fraction: float) -> None:
    if not 0.0 < max_fraction < 1.0:
        raise ConfigError(f"max_fraction must lie in (0, 1), not {max_fraction!r}.")


def check_target(target: float, target_type: str = "filters") -> None:
    if not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
        raise ConfigError(f"the pruning target must be a fraction in [0, 1), not {target!r}.")
    if target_type not in TARGET_TYPES:
        raise ConfigError(f"target_type {target_type!r} is not one of {', '.join(TARGET_TYPES)}.")

