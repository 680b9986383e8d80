"""Magnitude-biased loss preservation: θ² |g|."""
from fp.plugins.measures._loss import LossMeasure


class BiasedSnip(LossMeasure):
    """Magnitude-biased loss preservation θ²|g|; a filter scores Σ θ_i² |g_i|.

    Seed name: biased_loss.
    """

    name = "biased_snip"

    def __call__(self, ctx):
        grad = ctx.grad()
        return {n: w.detach() ** 2 * grad[n].abs() for n, w in ctx.weights.items()}
