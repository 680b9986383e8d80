"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020)."""
from __future__ import annotations

from typing import Annotated

import fp
from fp.errors import ConfigError
from fp.schedule import PruneStep

from ._checks import check_epoch, check_rounds, check_run


class IterativeMagnitude(fp.Schedule):
    """Iterative magnitude pruning: train, prune to 1 − (1−P)^(i/n), rewind, n times."""

    name = "imp"

    def __init__(self, rewind_epoch: Annotated[int, fp.Range(ge=0)] = 0):
        # the engine restores the surviving weights saved after this many epochs of the first
        # cycle (0 = the initialisation, as in the original lottery-ticket experiments); the
        # checkpoint keeps them as its rewind point (fp.engine.checkpoint.Rewind)
        self.rewind_epoch = rewind_epoch

    def plan(self, target: float, rounds: int, epochs: int,
             steps_per_epoch: int) -> list[PruneStep]:
        check_run(target, epochs, steps_per_epoch)
        check_rounds(rounds)
        if epochs < 1:
            raise ConfigError(f"train.epochs = {epochs!r} must be at least 1 (every IMP cycle "
                              f"trains that many epochs).")
        check_epoch("imp.rewind_epoch", self.rewind_epoch, epochs, inclusive=False)
        if target == 0.0:
            return []
        cycle = epochs * steps_per_epoch
        # equal per-cycle keep ratio: every cycle keeps (1 − P)^(1/n) of what survived
        steps = [PruneStep(step=i * cycle, target=1.0 - (1.0 - target) ** (i / rounds), rewind=True)
                 for i in range(1, rounds + 1)]
        steps[-1] = PruneStep(step=steps[-1].step, target=target, rewind=True)
        return steps

    def total_epochs(self, epochs: int, rounds: int) -> int:
        """One training cycle per round plus the final cycle of the pruned network."""
        return epochs * (rounds + 1)
