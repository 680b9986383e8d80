import torch


def test_fisher_uses_mean_of_squared_batch_gradients(weights, scores, reference, close,
                                                     filter_sum):
    stats = reference(5.0)
    expected = {n: w ** 2 * stats["grad_sq"][n] for n, w in weights.items()}
    close(scores("fisher", "weight"), expected)
    close(scores("fisher", "filter"), {n: filter_sum(s) for n, s in expected.items()})
    # E[g²] is not (E[g])²: three batches with different gradients
    squared_mean = {n: w ** 2 * stats["grad"][n] ** 2 for n, w in weights.items()}
    assert any(not torch.allclose(expected[n], squared_mean[n]) for n in expected)


