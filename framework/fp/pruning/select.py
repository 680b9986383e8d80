"""Which channels go: one global ranking across layers (the paper's protocol, Sec. 5).

Every slot of every group (see ``groups``) is ranked by its score, lowest first; ties go to the
earlier group, then the earlier slot, so a selection never depends on anything but the scores.
Slots are taken in that order until their saving covers ``need`` (in filters, parameters or
FLOPs). A per-layer cap keeps each group alive: it never loses more than ``max_fraction`` of
its DENSE width in all (so repeated prune events cannot hollow a layer out) and keeps at least
one slot. The cap holds for every member layer of the group too (``member_limits``): a member
that only part of the group's slots reach (one input of a concatenation tied to a wider layer)
could otherwise lose all its channels while the group keeps some, so a slot that would take a
member past its cap is passed over and the group's next slots are taken instead.

``round_to = k`` (Torch-Pruning's ``round_to``): a group that loses channels keeps a multiple of
k of them (of lcm(k, c) for slots of c channels). The ranking is walked as before; a group loses
its reached slots only in whole steps, the largest count whose kept width is such a multiple, so
it keeps some of its lowest reached slots until further ones join them, and the walk goes on to
later slots until the saving covers ``need``. The cap and the keep-one rule round the kept width
UP: at least one multiple (lcm(k, c)) stays, and a group that cannot keep one and lose channels
(width at most k) is not pruned.
"""
from __future__ import annotations

import math
from typing import Iterator

from torch import Tensor

from fp.errors import ConfigError
from fp.pruning.groups import ChannelGroup

TARGET_TYPES = ("filters", "params", "flops", "latency")
DEFAULT_MAX_FRACTION = 0.95


def slot_step(group: ChannelGroup, round_to: int) -> int:
    """Kept slots must be a multiple of this for the kept channels to be one of ``round_to``."""
    return round_to // math.gcd(round_to, group.width // group.slots)


def removable_slots(group: ChannelGroup, dense_width: int, max_fraction: float,
                    round_to: int = 1) -> int:
    """How many more slots ``group`` may lose under the cap, the kept width rounded up."""
    dense_slots = max(dense_width // group.interleave, group.slots)
    already = dense_slots - group.slots
    allowed = math.floor(max_fraction * dense_slots + 1e-9) - already
    room = max(0, min(allowed, group.slots - 1))
    step = slot_step(group, round_to)
    return max(0, group.slots - step * -(-(group.slots - room) // step))


def ranked_slots(groups: list[ChannelGroup], filter_scores: dict[str, Tensor],
                 dense_widths: dict[str, int], max_fraction: float,
                 round_to: int = 1) -> list[tuple[float, int, int]]:
    """(score, group index, slot) of every slot the cap lets go, lowest score first."""
    candidates = []
    for index, group in enumerate(groups):
        scores = group.slot_scores(filter_scores)
        if scores is None:
            continue
        room = removable_slots(group, dense_widths.get(group.root, group.width), max_fraction,
                               round_to)
        scored = sorted((float(s), index, slot) for slot, s in enumerate(scores.tolist())
                        if not math.isnan(s))
        # a group's lowest slots come first globally anyway
        candidates.extend(within_members(group, scored, room, dense_widths, max_fraction))
    candidates.sort()
    return candidates


def member_limits(group: ChannelGroup, dense_widths: dict[str, int], max_fraction: float,
                  room: int) -> list[tuple[list[int], int]]:
    """Per member whose own cap could bind before the group's ``room`` runs out: its channels
    in each slot and how many more it may lose (at most ``max_fraction`` of its dense width, and
    one channel kept)."""
    limits = []
    for name, slot_of in group.member_slots().items():
        width = len(slot_of)
        dense = max(dense_widths.get(name, width), width)
        allowed = min(math.floor(max_fraction * dense + 1e-9) - (dense - width), width - 1)
        counts = slot_of[slot_of >= 0].bincount(minlength=group.slots).tolist()
        if sum(sorted(counts, reverse=True)[:room]) > allowed:
            limits.append((counts, max(allowed, 0)))
    return limits


Ranked = list[tuple[float, int, int]]


def within_members(group: ChannelGroup, scored: Ranked, room: int, dense_widths: dict[str, int],
                   max_fraction: float) -> Ranked:
    """The first ``room`` of ``scored`` (a group's slots, lowest first) that keep every member
    within its own cap."""
    limits = member_limits(group, dense_widths, max_fraction, room)
    if not limits:
        return scored[:room]
    taken, lost = [], [0] * len(limits)
    for entry in scored:
        if len(taken) == room:
            break
        slot = entry[2]
        if all(lost[m] + counts[slot] <= allowed for m, (counts, allowed) in enumerate(limits)):
            taken.append(entry)
            for m, (counts, _) in enumerate(limits):
                lost[m] += counts[slot]
    return taken


def rounded_walk(groups: list[ChannelGroup], ranked: list[tuple[float, int, int]],
                 round_to: int = 1) -> Iterator[tuple[int, list[int]]]:
    """Walk ``ranked``: per slot reached, (its group, the slots that group loses now). With
    ``round_to`` 1 that is the slot itself; otherwise a group's reached slots go once their
    count leaves a kept width that is a multiple of ``round_to``, and [] until then."""
    reached: dict[int, list[int]] = {}
    gone: dict[int, int] = {}
    for _, index, slot in ranked:
        slots = reached.setdefault(index, [])
        slots.append(slot)
        if (groups[index].slots - len(slots)) % slot_step(groups[index], round_to):
            yield index, []
            continue
        yield index, slots[gone.get(index, 0):]
        gone[index] = len(slots)


def select_channels(groups: list[ChannelGroup], filter_scores: dict[str, Tensor], need: float,
                    slot_costs: list[Tensor], *, dense_widths: dict[str, int] | None = None,
                    max_fraction: float = DEFAULT_MAX_FRACTION,
                    round_to: int = 1) -> dict[int, list[int]]:
    """{group index: sorted channel indices} whose saving first reaches ``need``; fewer when
    the cap runs out of slots. ``dense_widths`` (weight name -> dense output channels) anchor
    the cap; a group missing from it counts its current width as dense."""
    return select_ranked(groups, filter_scores, need, slot_costs, [], dense_widths=dense_widths,
                         max_fraction=max_fraction, round_to=round_to)[0]


#: a candidate that goes one filter at a time: (score, weight name, filter, saving)
Single = tuple[float, str, int, float]


def select_ranked(groups: list[ChannelGroup], filter_scores: dict[str, Tensor], need: float,
                  slot_costs: list[Tensor], singles: list[Single], *,
                  dense_widths: dict[str, int] | None = None,
                  max_fraction: float = DEFAULT_MAX_FRACTION,
                  round_to: int = 1) -> tuple[dict[int, list[int]], dict[str, list[int]], float]:
    """One global ranking of the groups' slots and of ``singles`` (further candidates that go
    one filter at a time: the masked residual filters of ``residual``), lowest score first (a
    tie: slots first), walked until the saving reaches ``need``. Returns ({group index: sorted
    channel indices}, {weight name: sorted filters}, the saving)."""
    check_fraction(max_fraction)
    check_round_to(round_to)
    ranked = ranked_slots(groups, filter_scores, dense_widths or {}, max_fraction, round_to)
    merged = sorted([(score, 0, i) for i, (score, _, _) in enumerate(ranked)]
                    + [(single[0], 1, i) for i, single in enumerate(singles)])
    walk = rounded_walk(groups, ranked, round_to)  # one step per entry of ``ranked``, in order
    taken, chosen, saved = [], {}, 0.0
    for _, kind, position in merged:
        if saved >= need:
            break
        if kind == 0:
            index, slots = next(walk)
            taken.append((index, slots))
            saved += sum(float(slot_costs[index][slot]) for slot in slots)
        else:
            _, name, channel, saving = singles[position]
            chosen.setdefault(name, []).append(channel)
            saved += saving
    return (steps_selection(groups, taken), {n: sorted(c) for n, c in chosen.items()}, saved)


def rounded_steps(groups: list[ChannelGroup], ranked: list[tuple[float, int, int]],
                  round_to: int = 1) -> list[tuple[int, list[int]]]:
    """The walk's steps at which a group loses slots: the first m of them are what the first
    ranked slots up to the m-th step remove, so candidate selections are their prefixes."""
    return [(index, slots) for index, slots in rounded_walk(groups, ranked, round_to) if slots]


def steps_selection(groups: list[ChannelGroup],
                    steps: list[tuple[int, list[int]]]) -> dict[int, list[int]]:
    """{group index: sorted channel indices} that ``steps`` remove together."""
    chosen: dict[int, list[int]] = {}
    for index, slots in steps:
        for slot in slots:
            chosen.setdefault(index, []).extend(groups[index].slot_channels(slot))
    return {index: sorted(channels) for index, channels in sorted(chosen.items())}


def check_fraction(max_fraction: float) -> None:
    if not 0.0 < max_fraction < 1.0:
        raise ConfigError(f"max_fraction must lie in (0, 1), not {max_fraction!r}.")


def check_round_to(round_to: int) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to must be a positive whole number of channels, not "
                          f"{round_to!r}.")


def check_target(target: float, target_type: str = "filters") -> None:
    if not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
        raise ConfigError(f"the pruning target must be a fraction in [0, 1), not {target!r}.")
    if target_type not in TARGET_TYPES:
        raise ConfigError(f"target_type {target_type!r} is not one of {', '.join(TARGET_TYPES)}.")
