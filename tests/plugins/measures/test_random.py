import torch

from fp_builtins.measures.random import Random
from fp.scoring import score


def test_random_is_deterministic_per_seed(model):
    for granularity in ("filter", "weight"):
        first = score(model, Random(seed=3), None, granularity=granularity)
        again = score(model, Random(seed=3), None, granularity=granularity)
        other = score(model, Random(seed=4), None, granularity=granularity)
        assert all(torch.equal(first[n], again[n]) for n in first)
        assert not any(torch.equal(first[n], other[n]) for n in first)


def test_random_scores_are_uniform_and_shaped_like_the_weights(model, weights):
    filters = score(model, Random(), None, granularity="filter")
    per_weight = score(model, Random(), None, granularity="weight")
    for name, weight in weights.items():
        assert filters[name].shape == weight.shape[:1]
        assert per_weight[name].shape == weight.shape
        assert 0 <= per_weight[name].min() and per_weight[name].max() < 1
