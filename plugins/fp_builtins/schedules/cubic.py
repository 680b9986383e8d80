"""Gradual pruning on a cubic curve (Zhu & Gupta 2017, "To prune, or not to prune", Eq. 1)."""
from __future__ import annotations

import fp
from fp.errors import ConfigError
from fp.schedule import PruneStep

from ._checks import check_epoch, check_rounds, check_run


def cubic_fraction(initial: float, final: float, progress: float) -> float:
    """s_t = s_f + (s_i − s_f)(1 − progress)³, progress = (t − t0)/(nΔt) in [0, 1].

    Computed as s_i + (s_f − s_i)(1 − (1 − progress)³), so progress 0 gives s_i exactly.
    """
    return initial + (final - initial) * (1.0 - (1.0 - progress) ** 3)


class Cubic(fp.Schedule):
    """Zhu & Gupta's gradual pruning: `prune.rounds` cubic-curve steps from start to end epoch."""

    name = "cubic"

    def __init__(self, start_epoch: int = 0, end_epoch: int | None = None, initial: float = 0.0):
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch     # None: half of train.epochs
        self.initial = initial

    def plan(self, target: float, rounds: int, epochs: int,
             steps_per_epoch: int) -> list[PruneStep]:
        check_run(target, epochs, steps_per_epoch)
        check_rounds(rounds)
        end_epoch = epochs // 2 if self.end_epoch is None else self.end_epoch
        self._check_window(end_epoch, epochs)
        if target == 0.0:
            return []
        self._check_initial(target)
        start, end = self.start_epoch * steps_per_epoch, end_epoch * steps_per_epoch
        if end - start < rounds:
            raise ConfigError(f"prune.rounds = {rounds} needs at least {rounds} optimizer steps "
                              f"between cubic.start_epoch and cubic.end_epoch, but there are "
                              f"{end - start}.")
        # the curve starts at s_i at t0 (an event only when s_i > 0), then n increments to s_f
        first = 0 if self.initial > 0.0 else 1
        steps = [PruneStep(step=start + k * (end - start) // rounds,
                           target=cubic_fraction(self.initial, target, k / rounds))
                 for k in range(first, rounds + 1)]
        steps[-1] = PruneStep(step=end, target=target)
        return steps

    def _check_window(self, end_epoch: int, epochs: int) -> None:
        check_epoch("cubic.start_epoch", self.start_epoch, epochs)
        check_epoch("cubic.end_epoch", end_epoch, epochs)
        if end_epoch <= self.start_epoch:
            raise ConfigError(f"cubic.end_epoch = {end_epoch} must come after cubic.start_epoch = "
                              f"{self.start_epoch} (by default it is half of train.epochs).")

    def _check_initial(self, target: float) -> None:
        if not 0.0 <= self.initial < target:
            raise ConfigError(f"cubic.initial = {self.initial!r} must be at least 0 and below "
                              f"prune.target = {target!r}.")
