"""Prune to hand-picked cumulative fractions at hand-picked epochs."""
from __future__ import annotations

from typing import Sequence

import fp
from fp.errors import ConfigError
from fp.schedule import PruneStep

from ._checks import check_epoch, check_run

#: how far the last threshold may sit from prune.target (gin float literals round-trip exactly)
AGREEMENT = 1e-9


class Manual(fp.Schedule):
    """Hand-picked cumulative targets `manual.thresholds` after epochs `manual.epochs_at`."""

    name = "manual"

    def __init__(self, thresholds: Sequence[float] = (), epochs_at: Sequence[int] = ()):
        self.thresholds = [float(t) for t in thresholds]
        self.epochs_at = [int(e) for e in epochs_at]
        self._check_lists()

    def _check_lists(self) -> None:
        if len(self.thresholds) != len(self.epochs_at):
            raise ConfigError(f"manual.thresholds has {len(self.thresholds)} entries but "
                              f"manual.epochs_at has {len(self.epochs_at)}; give one epoch per "
                              f"threshold.")
        for t in self.thresholds:
            if not 0.0 <= t < 1.0:
                raise ConfigError(f"manual.thresholds contains {t!r}; every threshold must be in "
                                  f"[0, 1) (a cumulative fraction of the dense model).")
        _require_increasing("manual.thresholds", self.thresholds)
        _require_increasing("manual.epochs_at", self.epochs_at)

    def plan(self, target: float, rounds: int, epochs: int,
             steps_per_epoch: int) -> list[PruneStep]:
        # prune.rounds does not apply: the thresholds list sets the number of events
        check_run(target, epochs, steps_per_epoch)
        for epoch in self.epochs_at:
            check_epoch("manual.epochs_at", epoch, epochs)
        last = self.thresholds[-1] if self.thresholds else 0.0
        if abs(last - target) > AGREEMENT:
            raise ConfigError(f"manual.thresholds ends at {last!r} but prune.target = {target!r}; "
                              f"the last threshold is the final target, so they must agree.")
        if target == 0.0:
            return []
        steps = [PruneStep(step=e * steps_per_epoch, target=t)
                 for e, t in zip(self.epochs_at, self.thresholds)]
        steps[-1] = PruneStep(step=steps[-1].step, target=target)
        return steps


def _require_increasing(binding: str, values: Sequence[float]) -> None:
    for before, after in zip(values, values[1:]):
        if after <= before:
            raise ConfigError(f"{binding} = {list(values)!r} must be strictly increasing "
                              f"({after!r} follows {before!r}).")
