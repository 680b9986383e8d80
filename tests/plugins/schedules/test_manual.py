import pytest

from fp.errors import ConfigError
from fp_builtins.schedules.manual import Manual


def test_events_follow_the_lists(well_formed):
    plan = Manual(thresholds=[0.2, 0.5, 0.8], epochs_at=[0, 3, 6]).plan(
        target=0.8, rounds=1, epochs=10, steps_per_epoch=4)
    assert [(s.step, s.target) for s in plan] == [(0, 0.2), (12, 0.5), (24, 0.8)]
    well_formed(plan, 0.8)


def test_zero_target_with_no_thresholds_plans_no_event():
    assert Manual().plan(target=0.0, rounds=1, epochs=3, steps_per_epoch=4) == []


def test_last_threshold_must_agree_with_the_run_target():
    schedule = Manual(thresholds=[0.3, 0.6], epochs_at=[1, 2])
    with pytest.raises(ConfigError, match=r"ends at 0\.6 but prune\.target = 0\.9"):
        schedule.plan(target=0.9, rounds=1, epochs=5, steps_per_epoch=2)
    with pytest.raises(ConfigError, match=r"ends at 0\.0 but prune\.target = 0\.5"):
        Manual().plan(target=0.5, rounds=1, epochs=5, steps_per_epoch=2)


@pytest.mark.parametrize("thresholds,epochs_at,message", [
    ([0.2, 0.5], [1], "manual.thresholds has 2 entries but manual.epochs_at has 1"),
    ([0.5, 0.2], [1, 2], "manual.thresholds = [0.5, 0.2] must be strictly increasing"),
    ([0.2, 0.5], [3, 3], "manual.epochs_at = [3, 3] must be strictly increasing"),
    ([0.2, 1.0], [1, 2], "manual.thresholds contains 1.0"),
    ([-0.2, 0.5], [1, 2], "manual.thresholds contains -0.2"),
])
def test_bad_lists_are_rejected_when_built(thresholds, epochs_at, message):
    with pytest.raises(ConfigError) as err:
        Manual(thresholds=thresholds, epochs_at=epochs_at)
    assert message in str(err.value)


def test_epoch_past_training_is_an_error():
    with pytest.raises(ConfigError, match=r"manual\.epochs_at = 12 must be between 0 and "):
        Manual(thresholds=[0.5], epochs_at=[12]).plan(target=0.5, rounds=1, epochs=10,
                                                      steps_per_epoch=2)
