"""One prune event: at initialisation (pruning before training) or at the end of a given epoch."""
from __future__ import annotations

from typing import Annotated

import fp
from fp.schedule import PruneStep

from ._checks import check_epoch, check_run


class OneShot(fp.Schedule):
    """Remove all of `prune.target` at once after `oneshot.epoch` epochs (0 = at initialisation)."""

    name = "oneshot"

    def __init__(self, epoch: Annotated[int, fp.Range(ge=0)] = 0):
        self.epoch = epoch

    def plan(self, target: float, rounds: int, epochs: int,
             steps_per_epoch: int) -> list[PruneStep]:
        # prune.rounds does not apply: there is one event by definition
        check_run(target, epochs, steps_per_epoch)
        check_epoch("oneshot.epoch", self.epoch, epochs)
        if target == 0.0:
            return []
        return [PruneStep(step=self.epoch * steps_per_epoch, target=target)]
