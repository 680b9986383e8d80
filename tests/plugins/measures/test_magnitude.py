from fp.scoring import score


def test_magnitude_filter_is_l2_norm_and_weight_is_abs(weights, scores, close):
    close(scores("magnitude", "filter"), {n: w.flatten(1).norm(dim=1) for n, w in weights.items()})
    close(scores("magnitude", "weight"), {n: w.abs() for n, w in weights.items()})


def test_magnitude_needs_no_data(model, manager):
    assert score(model, "magnitude", None, manager=manager)["fc.weight"].shape == (3,)
