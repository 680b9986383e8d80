"""Validation shared by the schedules: one clear sentence naming the gin binding at fault."""
from __future__ import annotations

from fp.errors import ConfigError, DataError


def check_run(target: float, epochs: int, steps_per_epoch: int) -> None:
    """The settings every schedule plans with: ``prune.target``, ``train.epochs``, loader length."""
    check_schedule_target(target)
    if epochs < 0:
        raise ConfigError(f"train.epochs = {epochs!r} must not be negative.")
    if steps_per_epoch < 1:
        raise DataError(f"the training loader yields {steps_per_epoch!r} batches per epoch; "
                        f"a schedule needs at least 1.")


def check_schedule_target(target: float) -> None:
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"prune.target = {target!r} must be in [0, 1) (the fraction removed).")


def check_rounds(rounds: int) -> None:
    if rounds < 1:
        raise ConfigError(f"prune.rounds = {rounds!r} must be at least 1.")


def check_rounds_fit_epochs(rounds: int, epochs: int) -> None:
    """Schedules that prune once per epoch need an epoch for every round."""
    check_rounds(rounds)
    if rounds > epochs:
        raise ConfigError(f"prune.rounds = {rounds} must not exceed train.epochs = {epochs} "
                          f"(this schedule prunes once per epoch).")


def check_epoch(binding: str, epoch: int, epochs: int, *, inclusive: bool = True) -> None:
    """An epoch-valued argument in [0, epochs] (or [0, epochs) when not ``inclusive``)."""
    top_ok = epoch <= epochs if inclusive else epoch < epochs
    if epoch < 0 or not top_ok:
        span = "between 0 and" if inclusive else "at least 0 and below"
        raise ConfigError(f"{binding} = {epoch!r} must be {span} train.epochs = {epochs}.")
