def test_snip_is_abs_weight_times_mean_gradient(weights, scores, reference, close, filter_sum):
    grad = reference(5.0)["grad"]  # the measure's default T
    expected = {n: (w * grad[n]).abs() for n, w in weights.items()}
    close(scores("snip", "weight"), expected)
    close(scores("snip", "filter"), {n: filter_sum(s) for n, s in expected.items()})


def test_snip_temperature_argument_changes_the_gradient(weights, scores, reference, close):
    grad = reference(2.0)["grad"]
    close(scores("snip", "weight", temperature=2.0),
          {n: (w * grad[n]).abs() for n, w in weights.items()})
