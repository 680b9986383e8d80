import math
import re

import pytest

from fp.errors import ConfigError
from fp_builtins.schedules.rounds import Rounds, paper_round_fractions


@pytest.mark.parametrize("target,rounds", [(0.9, 1), (0.9, 3), (0.5, 5), (0.99, 10), (0.3, 7)])
def test_round_fractions_multiply_to_the_target(target, rounds):
    kept = math.prod(1.0 - p for p in paper_round_fractions(target, rounds))
    assert abs((1.0 - kept) - target) < 1e-12


def test_round_fractions_follow_the_papers_formula():
    # P = 0.9, n = 3: p_i = 0.9 / (0.9 i + 0.3)
    assert paper_round_fractions(0.9, 3) == pytest.approx([0.75, 0.9 / 2.1, 0.9 / 3.0])
    assert paper_round_fractions(0.0, 4) == [0.0] * 4


def test_plan_prunes_after_each_of_the_first_epochs(well_formed):
    plan = Rounds().plan(target=0.9, rounds=3, epochs=10, steps_per_epoch=7)
    assert [s.step for s in plan] == [7, 14, 21]
    # 1 − n(1−P)/(iP + n(1−P)) with n(1−P) = 0.3
    assert [s.target for s in plan] == pytest.approx([1 - 0.3 / 1.2, 1 - 0.3 / 2.1, 0.9])
    assert plan[-1].target == 0.9
    assert not any(s.rewind for s in plan)
    well_formed(plan, 0.9)


def test_cumulative_targets_match_the_product_of_round_fractions():
    plan = Rounds().plan(target=0.8, rounds=5, epochs=5, steps_per_epoch=1)
    kept = 1.0
    for step, p in zip(plan, paper_round_fractions(0.8, 5)):
        kept *= 1.0 - p
        assert step.target == pytest.approx(1.0 - kept, abs=1e-12)


def test_training_length_is_unchanged():
    assert Rounds().total_epochs(epochs=40, rounds=3) == 40


def test_zero_target_plans_no_event():
    assert Rounds().plan(target=0.0, rounds=3, epochs=10, steps_per_epoch=5) == []


@pytest.mark.parametrize("kwargs,message", [
    (dict(target=1.0, rounds=1, epochs=3), "prune.target = 1.0 must be in [0, 1)"),
    (dict(target=-0.1, rounds=1, epochs=3), "prune.target = -0.1"),
    (dict(target=0.5, rounds=0, epochs=3), "prune.rounds = 0 must be at least 1."),
    (dict(target=0.5, rounds=4, epochs=3), "prune.rounds = 4 must not exceed train.epochs = 3"),
])
def test_bad_values_name_the_binding(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Rounds().plan(steps_per_epoch=10, **kwargs)


def test_pure_function_rejects_bad_values():
    with pytest.raises(ConfigError, match="prune.rounds"):
        paper_round_fractions(0.5, 0)
    with pytest.raises(ConfigError, match="prune.target"):
        paper_round_fractions(1.5, 2)
