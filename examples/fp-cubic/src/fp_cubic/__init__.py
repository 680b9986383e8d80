"""fp-cubic: a third-party flowprune measure, kept small so it reads as a template.

It does not import torch at module level: the tensors it gets already carry their operations,
and `fp list measures` stays fast when nothing it loads imports torch."""
import fp


class Cubic(fp.Measure):
    """Weight magnitude raised to a power (3 by default); data-free."""

    name = "cubic"
    needs_data = False

    def __init__(self, power: float = 3.0):  # gin-bindable: cubic.power = 2.0
        self.power = power

    def __call__(self, ctx) -> dict:  # {weight name: tensor of that weight's shape}
        return {n: w.detach().abs() ** self.power for n, w in ctx.weights.items()}


@fp.hookimpl
def fp_register_measures():
    return [Cubic]
