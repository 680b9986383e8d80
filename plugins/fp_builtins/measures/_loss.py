"""The base of measures that read the scoring loss: a gin-bindable temperature, and weight scores
computed one weight at a time."""
from __future__ import annotations

from typing import Annotated

import fp


class LossMeasure(fp.Measure):
    """A measure of the loss at temperature T; ``temperature`` overrides the class default
    (``snip.temperature = 1.0`` in gin). A subclass scoring weight by weight defines
    ``weight_score``: its filter scores reduce each weight's scores before the next weight's are
    computed, so no weight-sized tensor outlives its own reduction."""

    def __init__(self, temperature: Annotated[float | None, fp.Range(gt=0)] = None):
        if temperature is not None:
            self.temperature = float(temperature)

    def weight_score(self, ctx, name, weight):
        """The scores of one scored weight, of its shape."""
        raise NotImplementedError(f"measure {self.name!r} does not implement weight_score")

    def __call__(self, ctx):
        return {n: self.weight_score(ctx, n, w) for n, w in ctx.weights.items()}

    def filter_scores(self, ctx):
        return {n: self.reduce(self.weight_score(ctx, n, w)) for n, w in ctx.weights.items()}
