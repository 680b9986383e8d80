"""Loss preservation (SNIP): |θ ⊙ g|."""
from fp_builtins.measures._loss import LossMeasure


class Snip(LossMeasure):
    """Loss preservation (SNIP) |θ ⊙ g|; a filter scores Σ|θ_i g_i|.

    Seed name: loss_based.
    """

    name = "snip"
    uses_grad_sq = False  # g only: fp.score skips E[g²]

    def weight_score(self, ctx, name, weight):
        return (weight.detach() * ctx.grad()[name]).abs_()
