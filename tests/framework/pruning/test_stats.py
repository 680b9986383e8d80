import torch
from torch import nn

from fp.pruning import (count_flops, count_params, dense_stats, filter_widths, prunable_filters)


def small_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_filter_widths_list_conv_and_linear_weights_by_parameter_name():
    assert filter_widths(small_model()) == {"0.weight": 4, "4.weight": 5}
    assert prunable_filters(small_model()) == 9


def test_params_count_everything_and_masks_subtract():
    model = small_model()
    expected = 3 * 4 * 9 + 2 * 4 + 4 * 36 * 5 + 5
    assert count_params(model) == expected
    mask = torch.ones(4, 3, 3, 3, dtype=torch.bool)
    mask[0] = False
    assert count_params(model, {"0.weight": mask}) == expected - 27


def test_flops_are_flop_counter_mode_flops_for_one_example():
    model = small_model().train()
    x = torch.randn(7, 3, 8, 8)
    conv = 2 * (4 * 6 * 6) * (3 * 9)   # multiply-adds count two
    linear = 2 * 144 * 5
    assert count_flops(model, x) == conv + linear
    assert model.training  # counted in eval mode, the mode restored


def test_dense_stats_collects_what_targets_refer_to():
    model, x = small_model(), torch.randn(1, 3, 8, 8)
    stats = dense_stats(model, x)
    assert stats == {"params": count_params(model), "flops": count_flops(model, x),
                     "filters": 9, "widths": {"0.weight": 4, "4.weight": 5}}
