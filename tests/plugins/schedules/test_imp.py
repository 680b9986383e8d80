import pytest

from fp.errors import ConfigError
from fp_builtins.schedules.imp import IterativeMagnitude


def test_each_cycle_keeps_the_same_fraction_and_rewinds(well_formed):
    plan = IterativeMagnitude().plan(target=0.936, rounds=3, epochs=5, steps_per_epoch=10)
    assert [s.step for s in plan] == [50, 100, 150]
    # (1 − 0.936)^(1/3) = 0.4: every cycle keeps 40 % of the survivors
    assert [s.target for s in plan] == pytest.approx([0.6, 0.84, 0.936])
    assert plan[-1].target == 0.936
    assert all(s.rewind for s in plan)
    well_formed(plan, 0.936)


def test_the_final_sparse_network_trains_one_more_cycle():
    assert IterativeMagnitude().total_epochs(epochs=5, rounds=3) == 20


def test_rewind_point_is_kept_for_the_engine():
    assert IterativeMagnitude().rewind_epoch == 0
    assert IterativeMagnitude(rewind_epoch=2).rewind_epoch == 2


def test_zero_target_plans_no_event():
    assert IterativeMagnitude().plan(target=0.0, rounds=3, epochs=5, steps_per_epoch=4) == []


@pytest.mark.parametrize("schedule,kwargs,message", [
    (IterativeMagnitude(), dict(rounds=0), r"prune\.rounds = 0 must be at least 1\."),
    (IterativeMagnitude(), dict(target=1.0), r"prune\.target = 1\.0 must be in \[0, 1\)"),
    (IterativeMagnitude(rewind_epoch=5), dict(), r"imp\.rewind_epoch = 5 must be at least 0 and "
                                                 r"below train\.epochs = 5\."),
    (IterativeMagnitude(), dict(epochs=0), r"train\.epochs = 0 must be at least 1"),
])
def test_bad_values_name_the_binding(schedule, kwargs, message):
    settings = dict(target=0.5, rounds=2, epochs=5, steps_per_epoch=5) | kwargs
    with pytest.raises(ConfigError, match=message):
        schedule.plan(**settings)
