"""BatchNorm scale: a filter scores |γ| of the BatchNorm that normalises it."""
import fp
from fp.measure import to_weight_shape


class BnScale(fp.Measure):
    """BatchNorm scale |γ_p| of the following BatchNorm (layers without one are not scored).

    Seed name: bn.
    """

    name = "bn_scale"
    needs_data = False

    def filter_scores(self, ctx):
        scores = {}
        for name in ctx.weights:
            bn = ctx.following_bn(name)
            if bn is not None and bn.weight is not None:
                scores[name] = bn.weight.detach().abs()
        return scores

    def __call__(self, ctx):
        return {n: to_weight_shape(s, ctx.weights[n]) for n, s in self.filter_scores(ctx).items()}
