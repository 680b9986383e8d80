"""The base of measures that read the scoring loss: a gin-bindable temperature."""
from __future__ import annotations

from typing import Annotated

import fp


class LossMeasure(fp.Measure):
    """A measure of the loss at temperature T; ``temperature`` overrides the class default
    (``snip.temperature = 1.0`` in gin)."""

    def __init__(self, temperature: Annotated[float | None, fp.Range(gt=0)] = None):
        if temperature is not None:
            self.temperature = float(temperature)
