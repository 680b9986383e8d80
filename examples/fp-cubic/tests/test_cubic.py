import torch
from torch import nn

import fp


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 3))


def batches():
    return [(torch.randn(2, 1, 8, 8), torch.tensor([0, 2]))]


def test_registered_through_the_entry_point():
    registries = fp.make_manager().registries
    assert registries["measures"].providers["cubic"] == "cubic"


def test_filter_scores_are_sums_of_cubed_magnitudes():
    model = tiny_model()
    scores = fp.score(model, "cubic", batches())
    expected = model[0].weight.detach().abs().pow(3).flatten(1).sum(1)
    torch.testing.assert_close(scores["0.weight"], expected)


def test_power_is_bindable():
    model = tiny_model()
    scores = fp.score(model, fp_cubic_with_power(2.0), batches(), granularity="weight")
    torch.testing.assert_close(scores["5.weight"], model[5].weight.detach() ** 2)


def fp_cubic_with_power(power):
    from fp_cubic import Cubic

    return Cubic(power=power)


def test_prune_with_cubic_shrinks_the_model():
    model = tiny_model()
    pruned = fp.prune(model, "cubic", batches(), 0.5, example_inputs=torch.zeros(1, 1, 8, 8))
    # 15 filters (the classifier's 3 outputs count but are never removed): 8 go, all from convs
    assert pruned[0].out_channels + pruned[2].out_channels == 12 - 8
    assert pruned(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
