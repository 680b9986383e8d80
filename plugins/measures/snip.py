"""Loss preservation (SNIP): |θ ⊙ g|."""
from fp.plugins.measures._loss import LossMeasure


class Snip(LossMeasure):
    """Loss preservation (SNIP) |θ ⊙ g|; a filter scores Σ|θ_i g_i|.

    Seed name: loss_based.
    """

    name = "snip"

    def __call__(self, ctx):
        grad = ctx.grad()
        return {n: (w.detach() * grad[n]).abs() for n, w in ctx.weights.items()}
