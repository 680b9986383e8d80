"""First-order Taylor (TFO): a filter scores |Σ θ_i g_i|, the loss change of removing it."""
from fp_builtins.measures._loss import LossMeasure


class Taylor(LossMeasure):
    """First-order Taylor |θ ⊙ g|; a filter scores |Σ θ_i g_i| (the signed sum, then |·|).

    Seed name: tfo.
    """

    name = "taylor"
    uses_grad_sq = False  # g only: fp.score skips E[g²]

    def weight_score(self, ctx, name, weight):
        return (weight.detach() * ctx.grad()[name]).abs_()

    def filter_scores(self, ctx):
        grad = ctx.grad()
        return {n: self.reduce(w.detach() * grad[n]).abs() for n, w in ctx.weights.items()}
