"""Paired statistics over seeds, on constructed data whose right verdict is known."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from fp.tools.report import paired


def values(low, high, seeds=None):
    seeds = seeds or range(len(low))
    return {"a": dict(zip(seeds, low)), "b": dict(zip(seeds, high))}


def test_a_clear_effect_is_supported_at_the_floor_of_five_pairs():
    c = paired.compare("a", "b", "loss", values([1.0, 1.1, 0.9, 1.2, 1.0], [2.0, 2.3, 1.8, 2.1, 2.2]))
    assert c.n == 5 and c.p == pytest.approx(1 / 32) == paired.smallest_p(5)
    assert c.verdict == paired.SUPPORTED
    assert c.interval[0] > 0 and c.mean == pytest.approx(np.mean([1.0, 1.2, 0.9, 0.9, 1.2]))


def test_no_effect_is_not_resolved():
    rng = np.random.default_rng(0)
    low = rng.normal(size=8)
    high = low + np.array([0.1, -0.1, 0.05, -0.05, 0.2, -0.2, 0.01, -0.01])
    c = paired.compare("a", "b", "loss", values(low, high))
    assert c.verdict == paired.NOT_RESOLVED
    assert c.interval[0] < 0 < c.interval[1]


def test_a_reversed_effect_is_contradicted():
    c = paired.compare("a", "b", "loss", values([2.0, 2.1, 2.2, 2.3, 2.4, 2.0], [1.0] * 6))
    assert c.verdict == paired.CONTRADICTED
    assert c.p_reverse == pytest.approx(1 / 64) and c.p == 1.0


def test_missing_runs_and_seeds_are_named_not_guessed():
    c = paired.compare("a", "c", "loss", values([1.0, 2.0], [2.0, 3.0]))
    assert c.verdict == paired.MISSING and c.n == 0
    # only seeds present for both measures pair; a NaN value drops its seed
    data = {"a": {0: 1.0, 1: 2.0, 2: math.nan, 3: 1.0}, "b": {0: 2.0, 2: 3.0, 3: 2.5}}
    c = paired.compare("a", "b", "loss", data)
    assert c.seeds == [0, 3] and c.differences == [1.0, 1.5]
    one = paired.compare("a", "b", "loss", {"a": {0: 1.0}, "b": {0: 2.0}})
    assert one.verdict == paired.MISSING


def test_the_sign_flip_p_value_matches_a_brute_force_enumeration():
    d = np.array([0.3, -0.1, 0.5, 0.2, -0.4, 0.25, 0.15])
    flips = [np.mean(np.array(s) * np.abs(d)) for s in itertools.product((-1, 1), repeat=len(d))]
    expected = np.mean(np.array(flips) >= d.mean() - 1e-12)
    assert paired.sign_flip_p(d) == pytest.approx(expected)


def test_the_interval_is_the_paired_t_interval():
    d = np.array([0.3, 0.1, 0.5, 0.2, 0.4])
    low, high = paired.t_interval(d)
    expected = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(expected)


def test_holm_adjusts_step_down_and_keeps_order():
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    kept, missing = paired.holm([0.5, math.nan])
    assert kept == 0.5 and math.isnan(missing)


def test_holm_over_two_secondaries_cannot_reach_five_percent_with_five_seeds():
    """The floor the docs state: 2 x 1/32 > 0.05."""
    clear = values([1.0] * 5, [2.0, 2.1, 2.2, 2.3, 2.4])
    comparisons = [paired.compare("a", "b", "loss", clear), paired.compare("a", "b", "acc", clear)]
    paired.adjust_secondary(comparisons)
    assert all(c.p_adjusted == pytest.approx(1 / 16) for c in comparisons)
    assert all(c.verdict == paired.NOT_RESOLVED for c in comparisons)
