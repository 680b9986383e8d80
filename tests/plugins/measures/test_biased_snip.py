def test_biased_snip_is_squared_weight_times_abs_gradient(weights, scores, reference, close,
                                                          filter_sum):
    grad = reference(5.0)["grad"]
    expected = {n: w ** 2 * grad[n].abs() for n, w in weights.items()}
    close(scores("biased_snip", "weight"), expected)
    close(scores("biased_snip", "filter"), {n: filter_sum(s) for n, s in expected.items()})
