"""Gradient-norm preservation: a filter scores |Σ θ_i (Hg)_i|."""
from fp_builtins.measures._loss import LossMeasure


class GradNorm(LossMeasure):
    """Gradient-norm preservation |θ ⊙ Hg|; a filter scores |Σ θ_i (Hg)_i|.

    Seed name: grad_preserve. Default T = 1.
    Scored on class-balanced samples by default (``prune.samples // classes`` images of each
    class), as the seed scores it.
    """

    name = "grad_norm"
    temperature = 1.0
    balanced = True

    def weight_score(self, ctx, name, weight):
        return (weight.detach() * ctx.hess_grad()[name]).abs_()

    def filter_scores(self, ctx):  # Σ_{i∈p} θ_i (Hg)_i without the whole Hg
        return {n: dots.abs() for n, dots in ctx.filter_hess_grad().items()}
