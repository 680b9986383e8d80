"""Gradient-norm increase (GraSP): θ ⊙ Hg, signed."""
from fp_builtins.measures._loss import LossMeasure


class Grasp(LossMeasure):
    """Gradient-norm increase (GraSP) θ ⊙ Hg, signed; a filter scores Σ θ_i (Hg)_i.

    Seed name: grasp. Default T = 200, the seed's.
    Scored on class-balanced samples by default (``prune.samples // classes`` images of each
    class), as the seed scores it.
    """

    name = "grasp"
    temperature = 200.0
    balanced = True

    def weight_score(self, ctx, name, weight):
        return weight.detach() * ctx.hess_grad()[name]

    def filter_scores(self, ctx):
        return dict(ctx.filter_hess_grad())  # Σ_{i∈p} θ_i (Hg)_i without the whole Hg
