"""BatchNorm Taylor (NVIDIA): γ²·E[g_γ²] + β²·E[g_β²] of the following BatchNorm."""
from fp_builtins.measures._loss import LossMeasure
from fp.measure import to_weight_shape


class BnTaylor(LossMeasure):
    """BatchNorm Taylor γ_p²·E[g_γ²] + β_p²·E[g_β²] of the following BatchNorm.

    Seed name: nvidia. E[g²] = Σ_b n_b (∇L_b)² / Σ_b n_b, the squared per-batch gradient
    weighted by batch size, as the seed weighs it; layers without a following (affine)
    BatchNorm are not scored.
    """

    name = "bn_taylor"

    def filter_scores(self, ctx):
        grad_sq = ctx.grad_sq()
        scores = {}
        for name in ctx.weights:
            bn_name = ctx.following_bn_name(name)
            bn = None if bn_name is None else ctx.model.get_submodule(bn_name)
            if bn is not None and bn.weight is not None:
                scores[name] = (bn.weight.detach() ** 2 * grad_sq[f"{bn_name}.weight"]
                                + bn.bias.detach() ** 2 * grad_sq[f"{bn_name}.bias"])
        return scores

    def __call__(self, ctx):
        return {n: to_weight_shape(s, ctx.weights[n]) for n, s in self.filter_scores(ctx).items()}
