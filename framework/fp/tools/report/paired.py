"""Paired comparisons over seeds, for the claims (docs/claims.md, "Statistics").

Runs of one seed share their initialisation, data subset, data order and, up to the first prune,
every scoring draw, so two measures are compared seed by seed. For a claim "A below B" of one
quantity, each seed present for both measures gives a paired difference d_i = x_B,i - x_A,i:
positive where the seed agrees with the claim. Over the n pairs:

- the effect is the mean difference d̄, with a paired-t 95% interval d̄ ± t(0.975; n-1) s/√n
  (s the sample standard deviation of the d_i);
- the one-sided p-value is exact: under "no difference" each d_i is as likely to have either
  sign, so the 2^n sign flips of the d_i are equally likely, and p is the fraction of them whose
  mean is at least d̄ (the observed flips included). With n pairs p is never below 1/2^n
  (1/32 at n = 5);
- the p-value against the claim (its reverse, "B below A") is computed the same way;
- across the secondary comparisons of a claim the p-values are adjusted by Holm's step-down
  method; the primary comparison is tested alone.

Verdict, at level ``alpha`` (0.05): *supported* when the (adjusted) p-value for the claim's
direction is at most alpha, *contradicted* when the one for the reverse direction is, *not
resolved* otherwise, and *not resolved (runs missing)* with fewer than two pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
#: exact enumeration up to this many pairs; above it, this many random sign flips (seeded)
EXACT_PAIRS = 20
MONTE_CARLO_FLIPS = 200_000

SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
MISSING = "not resolved (runs missing)"


@dataclass
class Paired:
    """One paired comparison "low below high" of a quantity over seeds."""

    low: str                        # the measure the claim expects lower
    high: str
    quantity: str
    seeds: list = field(default_factory=list)      # seeds present for both, in order
    differences: list = field(default_factory=list)  # high - low per seed
    mean: float = math.nan
    interval: tuple = (math.nan, math.nan)         # paired-t 95%
    p: float = math.nan             # one-sided, for the claim's direction
    p_reverse: float = math.nan     # one-sided, for the reverse
    p_adjusted: float = math.nan    # after Holm (equal to p for a primary comparison)
    p_reverse_adjusted: float = math.nan
    verdict: str = MISSING

    @property
    def n(self) -> int:
        return len(self.differences)


def pair(low: Mapping, high: Mapping) -> tuple[list, np.ndarray]:
    """Seeds present in both ``{seed: value}`` maps (values not None or NaN), and high - low."""
    seeds = [s for s in sorted(low) if s in high and finite(low[s]) and finite(high[s])]
    return seeds, np.array([float(high[s]) - float(low[s]) for s in seeds], dtype=np.float64)


def finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def sign_flip_p(differences: np.ndarray, seed: int = 0) -> float:
    """One-sided exact p-value of mean(d) >= observed under random signs (see the module)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n == 0:
        return math.nan
    observed = d.mean()
    if n <= EXACT_PAIRS:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((-1, 1), size=(MONTE_CARLO_FLIPS, n))
        signs[0] = 1
    means = (signs * np.abs(d)).mean(axis=1)
    # a tolerance for floating-point ties: a flip whose mean equals the observed one counts
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    return float(np.mean(means >= observed - tolerance))


def t_interval(differences: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The paired-t interval for the mean difference (NaN with fewer than two pairs)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return (float(d.mean() - half), float(d.mean() + half))


def compare(low: str, high: str, quantity: str, values: Mapping[str, Mapping]) -> Paired:
    """The paired comparison "``low`` below ``high``" of ``values[measure][seed]``."""
    result = Paired(low, high, quantity)
    if low not in values or high not in values:
        return result
    seeds, d = pair(values[low], values[high])
    result.seeds, result.differences = seeds, d.tolist()
    if len(d):
        result.mean = float(d.mean())
        result.p, result.p_reverse = sign_flip_p(d), sign_flip_p(-d)
        result.p_adjusted, result.p_reverse_adjusted = result.p, result.p_reverse
    result.interval = t_interval(d)
    result.verdict = verdict(result)
    return result


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order (NaN stays NaN, uncounted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if finite(p)]
    indexed.sort()
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def adjust_secondary(comparisons: list[Paired], alpha: float = ALPHA) -> None:
    """Holm-adjust the comparisons' p-values (each direction separately) and redo verdicts."""
    for attr, source in (("p_adjusted", "p"), ("p_reverse_adjusted", "p_reverse")):
        for comparison, p in zip(comparisons, holm([getattr(c, source) for c in comparisons])):
            setattr(comparison, attr, p)
    for comparison in comparisons:
        comparison.verdict = verdict(comparison, alpha)


def verdict(comparison: Paired, alpha: float = ALPHA) -> str:
    if comparison.n < 2:
        return MISSING
    if comparison.p_adjusted <= alpha:
        return SUPPORTED
    if comparison.p_reverse_adjusted <= alpha:
        return CONTRADICTED
    return NOT_RESOLVED


def smallest_p(pairs: int) -> float:
    """The smallest one-sided p-value an exact sign-flip test of ``pairs`` pairs can give."""
    return 1.0 / 2 ** pairs if pairs else math.nan


__all__ = ["ALPHA", "CONTRADICTED", "MISSING", "NOT_RESOLVED", "Paired", "SUPPORTED",
           "adjust_secondary", "compare", "holm", "pair", "sign_flip_p", "smallest_p",
           "t_interval", "verdict"]
