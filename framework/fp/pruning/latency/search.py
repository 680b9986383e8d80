"""The bisection behind a latency target (``latency_target``): candidate counts of ranked slots,
timed with an injected ``latency_fn`` against the dense model, at most ``budget`` timings in the
search. The count it settles on is then confirmed, whatever the budget left, and a count that
fails its confirmation is too slow, the search going on above it.

Where the function has ``latency_fn.interleaved(dense, model, confirm=...) -> ((s, noise),
(s, noise))`` (``measured_latency``'s), every probe times the dense model and the candidate in
interleaved order, a confirmation for longer. A dense timing from the start of the search would
not do: on a 2-core host the dense model's forward went from 160 ms to 127 ms within one
search, so candidates compared with the first timing looked up to a fifth faster than they
were. Without it, a search probe is compared with one dense timing and a confirmation times
dense, candidate, dense (the candidate compared with the mean of the two)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from fp.pruning.stats import prunable_filters

#: model -> (median seconds of a forward pass, relative spread of the timings)
LatencyFn = Callable[[nn.Module], "tuple[float, float]"]
#: timed candidates per latency prune event: by default, and the fewest a search can work with
DEFAULT_PROBES, MIN_PROBES = 8, 3


@dataclass
class LatencyProbe:
    """One timing of a candidate (a record for metrics.jsonl)."""

    probe: int              # 1, 2, ... in the order they were taken
    phase: str              # "search" (bisection) or "confirm" (between two dense timings)
    candidate: int          # how many of the event's rounding steps it takes (bisected)
    slots: int              # ranked slots it removes in this event, after rounding
    filters: int            # prunable filters the candidate keeps
    latency_s: float        # the median latency_fn measured
    noise: float            # the relative spread it reported
    dense_latency_s: float  # the dense latency it is compared with
    ratio: float            # latency_s / dense_latency_s
    meets_target: bool      # ratio <= 1 - target
    accepted: bool = False  # the event's choice (its last timing)


class Search:
    """The bisection over candidate counts 0..count (see the module docstring)."""

    def __init__(self, latency_fn: LatencyFn, reference: nn.Module, target: float, budget: int,
                 candidate: Callable[[int], tuple[nn.Module, int]]) -> None:
        self.fn, self.reference, self.target = latency_fn, reference, target
        self.budget, self.candidate = budget, candidate
        self.probes: list[LatencyProbe] = []
        self.last: dict[int, LatencyProbe] = {}  # count -> its latest timing
        # one dense timing for every probe, unless each probe times the dense model beside it
        self.dense_s = (float("nan") if hasattr(latency_fn, "interleaved")
                        else float(latency_fn(reference)[0]))

    def time(self, m: int, phase: str = "search") -> LatencyProbe:
        """Time candidate ``m`` (a confirmation between two timings of the dense model)."""
        (trial, slots), dense_s = self.candidate(m), self.dense_s
        interleaved = getattr(self.fn, "interleaved", None)  # (dense, model), interleaved
        if interleaved is not None:  # every probe beside a fresh timing of the dense model
            (dense_s, _), (seconds, noise) = interleaved(self.reference, trial,
                                                         confirm=phase == "confirm")
        elif phase == "confirm":
            before, (seconds, noise) = self.fn(self.reference)[0], self.fn(trial)
            dense_s = (before + self.fn(self.reference)[0]) / 2
        else:
            seconds, noise = self.fn(trial)
        seconds, noise, dense_s = float(seconds), float(noise), float(dense_s)
        ratio = seconds / dense_s
        meets = ratio <= 1 - self.target or self.target == 0  # 0: no goal, nothing to remove
        probe = LatencyProbe(len(self.probes) + 1, phase, m, slots, prunable_filters(trial),
                             seconds, noise, dense_s, ratio, meets)
        self.budget -= 1
        self.probes.append(probe)
        self.last[m] = probe
        return probe

    def run(self, count: int, known_slow: bool) -> int | None:
        """The count chosen, or None when the most the cap allows is too slow."""
        lo, hi = 0, None
        if not known_slow:  # pruned before, or a zero target: it may be fast enough already
            lo, hi = (-1, 0) if self.time(0).meets_target else (0, None)
        while True:
            if hi is None:
                hi = self.passing_above(lo, count)
                if hi is None:
                    return None
            while self.budget > 1 and hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if self.time(mid).meets_target else (mid, hi)
            # the choice is always re-timed interleaved with the dense model, past the budget if
            # need be: what is accepted is a figure measured beside the dense one
            if self.last[hi].phase == "confirm" or self.time(hi, "confirm").meets_target:
                return hi
            lo, hi = hi, None

    def passing_above(self, lo: int, count: int) -> int | None:
        """The fewest slots above ``lo`` whose latest timing met the goal; else the cap's."""
        above = [m for m, probe in self.last.items() if m > lo and probe.meets_target]
        if above:
            return min(above)
        if lo >= count or count in self.last or self.budget == 0:
            return None
        if self.time(count).meets_target:
            return count
        # one slow timing may be load from elsewhere: the cap is timed once more, interleaved
        # with the dense model, before the target counts as unreachable
        return count if self.budget > 0 and self.time(count, "confirm").meets_target else None

    def reachable(self, count: int) -> str:
        best = self.last.get(count)
        if best is None:
            return "nothing faster (no slot may go)"
        return (f"about {max(1 - best.ratio, 0.0):.3f} (the smallest candidate ran at "
                f"{best.ratio:.2f}x the dense latency)")
