"""Fisher: θ² times the squared per-batch gradient, weighted by batch size."""
from fp.plugins.measures._loss import LossMeasure


class Fisher(LossMeasure):
    """Fisher θ² · E[g²], E[g²] = Σ_b n_b (∇L_b)² / Σ_b n_b; a filter scores the sum.

    Seed name: fisher.
    """

    name = "fisher"

    def __call__(self, ctx):
        grad_sq = ctx.grad_sq()
        return {n: w.detach() ** 2 * grad_sq[n] for n, w in ctx.weights.items()}
