"""The statistics behind the claims' verdicts: a measure's per-seed values (mean, sample std),
pairwise comparisons that count only beyond the combined spread, and the verdict rule
(docs/claims.md, "The decision rule")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

HOLDS, FAILS, UNDETERMINED = "holds", "does not hold", "undetermined"


@dataclass
class Stat:
    """One measure's per-seed values of a quantity."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None


@dataclass
class Comparison:
    """Expected: ``low``'s value below ``high``'s. ``outcome`` is supports, contradicts, overlap
    or missing (a measure absent or with fewer than two seeds)."""

    quantity: str
    low: str
    high: str
    outcome: str
    difference: float | None = None     # mean(high) − mean(low)
    spread: float | None = None         # std(low) + std(high)
    absent: tuple = ()                  # the measures without two seeds of this quantity


def compare(quantity: str, stats: dict[str, Stat], low: str, high: str) -> Comparison:
    a, b = stats.get(low), stats.get(high)
    absent = tuple(m for m, s in ((low, a), (high, b)) if s is None or s.std is None)
    if absent:
        return Comparison(quantity, low, high, "missing", absent=absent)
    difference, spread = b.mean - a.mean, a.std + b.std
    outcome = ("supports" if difference > spread else
               "contradicts" if -difference > spread else "overlap")
    return Comparison(quantity, low, high, outcome, difference, spread)


def above(quantity: str, stat: Stat | None, name: str, bound: float) -> Comparison:
    """``name``'s value above a fixed ``bound`` beyond its own std."""
    if stat is None or stat.std is None:
        return Comparison(quantity, f"{bound:g}", name, "missing", absent=(name,))
    difference = stat.mean - bound
    outcome = ("supports" if difference > stat.std else
               "contradicts" if -difference > stat.std else "overlap")
    return Comparison(quantity, f"{bound:g}", name, outcome, difference, stat.std)


def decide(comparisons: Sequence[Comparison], required: Sequence[str]) -> tuple[str, str]:
    """The verdict and its reason: missing required runs, then any contradiction, then all
    supporting, else the overlaps."""
    lacking = {m for c in comparisons for m in c.absent}
    absent = [m for m in required if m in lacking]
    if absent:
        return UNDETERMINED, (f"runs missing: {', '.join(absent)} need at least two seeds with "
                              "the logged quantities")
    judged = [c for c in comparisons if c.outcome != "missing"]
    against = [c for c in judged if c.outcome == "contradicts"]
    if against:
        return FAILS, "contradicted beyond the spread: " + "; ".join(map(pair_text, against))
    overlaps = [c for c in judged if c.outcome == "overlap"]
    if judged and not overlaps:
        return HOLDS, "every comparison is beyond the spread"
    return UNDETERMINED, "spread overlaps: " + "; ".join(map(pair_text, overlaps))


def pair_text(c: Comparison) -> str:
    return f"{c.quantity} {c.low} < {c.high} (difference {c.difference:.4g}, spread {c.spread:.4g})"
