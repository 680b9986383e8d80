"""Fisher: θ² times the mean squared per-batch gradient."""
from fp.plugins.measures._loss import LossMeasure


class Fisher(LossMeasure):
    """Fisher θ² · mean_b (∇L_b)²; a filter scores the sum.

    Seed name: fisher.
    """

    name = "fisher"

    def __call__(self, ctx):
        grad_sq = ctx.grad_sq()
        return {n: w.detach() ** 2 * grad_sq[n] for n, w in ctx.weights.items()}
