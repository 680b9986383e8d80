"""Weight magnitude: a filter scores its L2 norm."""
import fp


class Magnitude(fp.Measure):
    """Weight magnitude |θ|; a filter scores its L2 norm ‖θ_p‖₂.

    Seed name: mag_based.
    """

    name = "magnitude"
    needs_data = False

    def __call__(self, ctx):
        return {n: w.detach().abs() for n, w in ctx.weights.items()}

    def reduce(self, weight_scores):
        return weight_scores.flatten(1).norm(dim=1) if weight_scores.dim() > 1 else weight_scores
