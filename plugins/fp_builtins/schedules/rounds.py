"""The paper's prune-and-train rounds: train an epoch, prune, repeat (Lubana & Dick, ICLR 2021)."""
from __future__ import annotations

import fp
from fp.schedule import PruneStep

from ._checks import check_rounds, check_rounds_fit_epochs, check_run, check_schedule_target


def paper_round_fractions(target: float, rounds: int) -> list[float]:
    """The fraction p_i of the *current* filters removed in round i = 1..n.

    p_i = P / (i·P + n·(1 − P)): the survivors after round i are n(1 − P) / (iP + n(1 − P))
    of the dense model, so the product of (1 − p_i) telescopes to exactly 1 − P after n rounds.
    """
    check_schedule_target(target)
    check_rounds(rounds)
    n, p = rounds, target
    return [p / (i * p + n * (1.0 - p)) for i in range(1, n + 1)]


def cumulative_target(target: float, rounds: int, done: int) -> float:
    """Fraction of the dense model removed after ``done`` rounds (closed form of Π(1 − p_j))."""
    n, p = rounds, target
    return 1.0 - n * (1.0 - p) / (done * p + n * (1.0 - p))


class Rounds(fp.Schedule):
    """The paper's rounds: after epoch i, prune p_i = P/(iP + n(1−P)) of the remaining filters."""

    name = "rounds"

    def plan(self, target: float, rounds: int, epochs: int,
             steps_per_epoch: int) -> list[PruneStep]:
        check_run(target, epochs, steps_per_epoch)
        check_rounds_fit_epochs(rounds, epochs)
        if target == 0.0:
            return []
        steps = [PruneStep(step=i * steps_per_epoch, target=cumulative_target(target, rounds, i))
                 for i in range(1, rounds + 1)]
        # the closed form is exact in theory; pin the final event so rounding never misses P
        steps[-1] = PruneStep(step=steps[-1].step, target=target)
        return steps
