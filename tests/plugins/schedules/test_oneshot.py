import pytest

from fp.errors import ConfigError, DataError
from fp_builtins.schedules.oneshot import OneShot


def test_default_prunes_at_initialisation(well_formed):
    plan = OneShot().plan(target=0.7, rounds=1, epochs=10, steps_per_epoch=50)
    assert [(s.step, s.target, s.rewind) for s in plan] == [(0, 0.7, False)]
    well_formed(plan, 0.7)


def test_prunes_at_the_end_of_the_given_epoch():
    plan = OneShot(epoch=4).plan(target=0.5, rounds=3, epochs=10, steps_per_epoch=50)
    assert [(s.step, s.target) for s in plan] == [(200, 0.5)]


def test_zero_target_plans_no_event():
    assert OneShot(epoch=2).plan(target=0.0, rounds=1, epochs=10, steps_per_epoch=5) == []


def test_epoch_past_training_is_an_error():
    with pytest.raises(ConfigError, match=r"oneshot\.epoch = 11 must be between 0 and "
                                          r"train\.epochs = 10\."):
        OneShot(epoch=11).plan(target=0.5, rounds=1, epochs=10, steps_per_epoch=5)
    with pytest.raises(ConfigError, match=r"oneshot\.epoch = -1"):
        OneShot(epoch=-1).plan(target=0.5, rounds=1, epochs=10, steps_per_epoch=5)


def test_empty_loader_is_a_data_error():
    with pytest.raises(DataError, match="batches per epoch"):
        OneShot().plan(target=0.5, rounds=1, epochs=10, steps_per_epoch=0)
