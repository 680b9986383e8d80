"""Gradient-norm preservation: a filter scores |Σ θ_i (Hg)_i|."""
from fp.plugins.measures._loss import LossMeasure


class GradNorm(LossMeasure):
    """Gradient-norm preservation |θ ⊙ Hg|; a filter scores |Σ θ_i (Hg)_i|.

    Seed name: grad_preserve. Default T = 1.
    """

    name = "grad_norm"
    temperature = 1.0

    def products(self, ctx):
        hess_grad = ctx.hess_grad()
        return {n: w.detach() * hess_grad[n] for n, w in ctx.weights.items()}

    def __call__(self, ctx):
        return {n: p.abs() for n, p in self.products(ctx).items()}

    def filter_scores(self, ctx):
        return {n: self.reduce(p).abs() for n, p in self.products(ctx).items()}
