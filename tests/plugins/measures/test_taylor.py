def test_taylor_filter_is_abs_of_signed_sum(weights, scores, reference, close, filter_sum):
    grad = reference(5.0)["grad"]
    products = {n: w * grad[n] for n, w in weights.items()}
    close(scores("taylor", "weight"), {n: p.abs() for n, p in products.items()})
    close(scores("taylor", "filter"), {n: filter_sum(p).abs() for n, p in products.items()})


def test_taylor_filter_differs_from_snip_sum(scores):
    taylor, snip = scores("taylor", "filter"), scores("snip", "filter")
    # |Σθg| ≤ Σ|θg|, strictly where a filter's products have mixed signs
    assert all((taylor[n] <= snip[n] + 1e-7).all() for n in taylor)
    assert any((taylor[n] < snip[n] * 0.999).any() for n in taylor)
