"""L1 norm: a filter scores the sum of its absolute weights."""
import fp


class L1(fp.Measure):
    """L1 norm |θ|; a filter scores ‖θ_p‖₁.

    Seed name: l1.
    """

    name = "l1"
    needs_data = False

    def __call__(self, ctx):
        return {n: w.detach().abs() for n, w in ctx.weights.items()}
