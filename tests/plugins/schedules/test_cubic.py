import pytest

from fp.errors import ConfigError
from fp_builtins.schedules.cubic import Cubic, cubic_fraction


def test_curve_endpoints_and_midpoint():
    assert cubic_fraction(0.1, 0.9, 0.0) == 0.1
    assert cubic_fraction(0.1, 0.9, 1.0) == pytest.approx(0.9, abs=1e-15)
    # s_f + (s_i − s_f)(1 − 1/2)³ = 0.9 − 0.8 / 8
    assert cubic_fraction(0.1, 0.9, 0.5) == pytest.approx(0.8)


def test_default_window_is_the_first_half_of_training(well_formed):
    plan = Cubic().plan(target=0.8, rounds=4, epochs=10, steps_per_epoch=10)
    assert [s.step for s in plan] == [12, 25, 37, 50]
    # 0.8 (1 − (1 − k/4)³), k = 1..4
    assert [s.target for s in plan] == pytest.approx([0.8 * (1 - (3 / 4) ** 3),
                                                      0.8 * (1 - (1 / 2) ** 3),
                                                      0.8 * (1 - (1 / 4) ** 3), 0.8])
    assert plan[-1].target == 0.8
    well_formed(plan, 0.8)


def test_increments_shrink_as_pruning_proceeds():
    targets = [s.target for s in Cubic().plan(target=0.9, rounds=10, epochs=20, steps_per_epoch=5)]
    increments = [b - a for a, b in zip([0.0] + targets, targets)]
    assert all(later < earlier for earlier, later in zip(increments, increments[1:]))


def test_nonzero_initial_prunes_at_the_start_epoch(well_formed):
    plan = Cubic(start_epoch=2, end_epoch=6, initial=0.2).plan(
        target=0.6, rounds=2, epochs=8, steps_per_epoch=3)
    assert [s.step for s in plan] == [6, 12, 18]
    assert [s.target for s in plan] == pytest.approx([0.2, 0.2 + 0.4 * (1 - 0.5 ** 3), 0.6])
    well_formed(plan, 0.6)


def test_zero_target_plans_no_event():
    assert Cubic().plan(target=0.0, rounds=3, epochs=10, steps_per_epoch=5) == []


@pytest.mark.parametrize("schedule,kwargs,message", [
    (Cubic(), dict(rounds=0), r"prune\.rounds = 0 must be at least 1\."),
    (Cubic(start_epoch=5), dict(), r"cubic\.end_epoch = 5 must come after cubic\.start_epoch"),
    (Cubic(end_epoch=11), dict(), r"cubic\.end_epoch = 11 must be between 0 and train\.epochs"),
    (Cubic(initial=0.6), dict(), r"cubic\.initial = 0\.6 must be at least 0 and below prune"),
    (Cubic(end_epoch=1), dict(rounds=3, steps_per_epoch=2), r"prune\.rounds = 3 needs at least 3 "
                                                            r"optimizer steps .* there are 2\."),
])
def test_bad_values_name_the_binding(schedule, kwargs, message):
    settings = dict(target=0.5, rounds=2, epochs=10, steps_per_epoch=5) | kwargs
    with pytest.raises(ConfigError, match=message):
        schedule.plan(**settings)
