"""The pruning-schedule contract. Concrete schedules are plugins (``fp_builtins.schedules``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class PruneStep:
    """One planned prune event.

    ``step``: the global optimizer-step count after which it happens (0 = at initialisation,
    ``e * steps_per_epoch`` = at the end of epoch ``e``). ``target``: the cumulative fraction of the
    dense model removed once it is done. ``rewind``: restore the surviving weights to the rewind
    point and restart the training clock afterwards (iterative magnitude pruning).
    """

    step: int
    target: float
    rewind: bool = False


class Schedule:
    """Decides when to prune and how much. ``plan`` is pure arithmetic, so it is easy to test."""

    name: ClassVar[str] = ""

    def plan(self, target: float, rounds: int, epochs: int, steps_per_epoch: int) -> list[PruneStep]:
        """The prune events of a run, in order, for a final ``target`` fraction in [0, 1)."""
        raise NotImplementedError(f"schedule {self.name!r} does not implement plan()")

    def total_epochs(self, epochs: int, rounds: int) -> int:
        """Epochs the run trains in all (schedules that restart training override this)."""
        return epochs
