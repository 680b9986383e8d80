def test_l1_filter_is_l1_norm_and_weight_is_abs(weights, scores, close):
    close(scores("l1", "filter"), {n: w.abs().flatten(1).sum(1) for n, w in weights.items()})
    close(scores("l1", "weight"), {n: w.abs() for n, w in weights.items()})
