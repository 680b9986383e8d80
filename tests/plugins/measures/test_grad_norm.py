from fp_builtins.measures.grad_norm import GradNorm


def test_grad_norm_filter_is_abs_of_signed_sum(weights, scores, reference, close, filter_sum):
    hess_grad = reference(1.0)["hess_grad"]  # the default T
    products = {n: w * hess_grad[n] for n, w in weights.items()}
    close(scores("grad_norm", "weight"), {n: p.abs() for n, p in products.items()})
    close(scores("grad_norm", "filter"), {n: filter_sum(p).abs() for n, p in products.items()})


def test_grad_norm_default_temperature_is_1():
    assert GradNorm.temperature == 1.0
