"""First-order Taylor (TFO): a filter scores |Σ θ_i g_i|, the loss change of removing it."""
from fp.plugins.measures._loss import LossMeasure


class Taylor(LossMeasure):
    """First-order Taylor |θ ⊙ g|; a filter scores |Σ θ_i g_i| (the signed sum, then |·|).

    Seed name: tfo.
    """

    name = "taylor"

    def products(self, ctx):
        grad = ctx.grad()
        return {n: w.detach() * grad[n] for n, w in ctx.weights.items()}

    def __call__(self, ctx):
        return {n: p.abs() for n, p in self.products(ctx).items()}

    def filter_scores(self, ctx):
        return {n: self.reduce(p).abs() for n, p in self.products(ctx).items()}
