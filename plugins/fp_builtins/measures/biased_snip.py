"""Magnitude-biased loss preservation: θ² |g|."""
from fp_builtins.measures._loss import LossMeasure


class BiasedSnip(LossMeasure):
    """Magnitude-biased loss preservation θ²|g|; a filter scores Σ θ_i² |g_i|.

    Seed name: biased_loss.
    """

    name = "biased_snip"
    uses_grad_sq = False  # g only: fp.score skips E[g²]

    def weight_score(self, ctx, name, weight):
        return weight.detach().square().mul_(ctx.grad()[name]).abs_()  # |θ² g| = θ² |g|
