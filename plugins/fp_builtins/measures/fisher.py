"""Fisher: θ² times the squared per-batch gradient, weighted by batch size."""
from fp_builtins.measures._loss import LossMeasure


class Fisher(LossMeasure):
    """Fisher θ² · E[g²], E[g²] = Σ_b n_b (∇L_b)² / Σ_b n_b; a filter scores the sum.

    Seed name: fisher.
    """

    name = "fisher"
    uses_grad = False  # E[g²] only: fp.score leaves g out

    def weight_score(self, ctx, name, weight):
        return weight.detach().square().mul_(ctx.grad_sq()[name])
