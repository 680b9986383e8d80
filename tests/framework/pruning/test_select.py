import copy
import math

import pytest
import torch

from fp.errors import ConfigError, PruningError
from fp.pruning import (channel_groups, count_flops, count_params, dense_stats, filter_widths,
                        prunable_filters, prune_filters)

MAX_MEMBERS = 3  # the largest group of the tiny resnet: stem + two residual branches


def removed_fraction(model, dense, target_type, images):
    now = {"filters": prunable_filters, "params": count_params,
           "flops": lambda m: count_flops(m, images)}[target_type](model)
    return 1 - now / dense[target_type]


@pytest.mark.parametrize("target", [0.1, 0.37, 0.5, 0.8])
def test_filter_target_is_hit_to_the_rounding_of_one_group(resnet, images, filter_scores, target):
    dense = dense_stats(resnet, images)
    prune_filters(resnet, filter_scores(resnet), target, example_inputs=images, dense=dense)
    goal = round(target * dense["filters"])
    assert goal <= dense["filters"] - prunable_filters(resnet) < goal + MAX_MEMBERS


def test_targets_are_cumulative_fractions_of_the_dense_model(resnet, images, filter_scores):
    dense = dense_stats(resnet, images)
    for target in (0.2, 0.4, 0.6):
        prune_filters(resnet, filter_scores(resnet), target, example_inputs=images, dense=dense)
        removed = dense["filters"] - prunable_filters(resnet)
        goal = round(target * dense["filters"])
        assert goal <= removed < goal + MAX_MEMBERS
    again = prune_filters(resnet, filter_scores(resnet), 0.6, example_inputs=images, dense=dense)
    assert again.removed == {}  # already there


@pytest.mark.parametrize("target_type", ["params", "flops"])
@pytest.mark.parametrize("model_fixture", ["resnet", "concat_net"])
def test_param_and_flop_targets_are_reached_closely(model_fixture, target_type, request, images,
                                                    filter_scores):
    model = request.getfixturevalue(model_fixture)
    dense = dense_stats(model, images)
    prune_filters(model, filter_scores(model), 0.5, example_inputs=images, dense=dense,
                  target_type=target_type)
    assert 0.5 <= removed_fraction(model, dense, target_type, images) < 0.56


def adversarial_scores(model, victim):
    """The victim layer scores far below everything else: a global ranking empties it first."""
    scores = {n: torch.rand(w, generator=torch.Generator().manual_seed(3)) + 1
              for n, w in filter_widths(model).items()}
    scores[victim] = torch.full_like(scores[victim], -1e9)
    scores["fc.weight"] = torch.full_like(scores["fc.weight"], -1e9)
    return scores


@pytest.mark.parametrize("max_fraction", [0.95, 0.5])
def test_per_layer_cap_holds_across_events_even_against_adversarial_scores(resnet, images,
                                                                           max_fraction):
    dense = dense_stats(resnet, images)
    victim = "blocks.3.a.conv.weight"  # 32 filters
    for target in (0.3, 0.6 if max_fraction > 0.9 else 0.45):
        prune_filters(resnet, adversarial_scores(resnet, victim), target, example_inputs=images,
                      dense=dense, max_fraction=max_fraction)
        for name, width in filter_widths(resnet).items():
            dense_width = dense["widths"][name]
            assert width >= 1 and dense_width - width <= math.floor(max_fraction * dense_width)
    assert filter_widths(resnet)[victim] == 32 - math.floor(max_fraction * 32)
    assert resnet.fc.weight.shape[0] == 10  # the classifier is never pruned


def test_cap_holds_without_dense_widths_from_the_first_event_on(resnet, images):
    dense = {k: v for k, v in dense_stats(resnet, images).items() if k != "widths"}
    victim = "blocks.2.a.conv.weight"  # 16 filters
    for target in (0.3, 0.6):
        prune_filters(resnet, adversarial_scores(resnet, victim), target, example_inputs=images,
                      dense=dense)
    assert filter_widths(resnet)[victim] == 1  # floor(0.95 * 16) = 15 removed in all


def test_same_scores_same_selection_ties_included(resnet, images):
    ties = {n: torch.zeros(w) for n, w in filter_widths(resnet).items()}
    twin = copy.deepcopy(resnet)
    first, second = (prune_filters(m, ties, 0.4, example_inputs=images,
                                   dense=dense_stats(m, images)) for m in (resnet, twin))
    assert first.removed.keys() == second.removed.keys()
    assert all(torch.equal(first.removed[k], second.removed[k]) for k in first.removed)


def test_lowest_scores_go_first(resnet, images):
    scores = {n: torch.arange(w, dtype=torch.float) for n, w in filter_widths(resnet).items()}
    scores["blocks.3.a.conv.weight"] -= 100  # the whole layer ranks below all others
    result = prune_filters(resnet, scores, 0.05, example_inputs=images,
                           dense=dense_stats(resnet, images))
    assert list(result.removed) == ["blocks.3.a.conv.weight"]
    assert result.removed["blocks.3.a.conv.weight"].tolist() == list(range(len(
        result.removed["blocks.3.a.conv.weight"])))


def test_unscored_layers_are_left_alone(resnet, images, filter_scores):
    scores = {"blocks.3.a.conv.weight": torch.rand(32), "blocks.2.a.conv.weight": torch.rand(16)}
    result = prune_filters(resnet, scores, 0.1, example_inputs=images,
                           dense=dense_stats(resnet, images))
    assert set(result.removed) <= set(scores)


def test_an_unreachable_target_is_an_error_before_any_surgery(resnet, images, filter_scores):
    widths = filter_widths(resnet)
    with pytest.raises(PruningError, match="cannot be reached"):
        prune_filters(resnet, filter_scores(resnet), 0.9, example_inputs=images,
                      dense=dense_stats(resnet, images), max_fraction=0.5)
    assert filter_widths(resnet) == widths


@pytest.mark.parametrize("kwargs", [{"target": 1.0}, {"target": -0.1}, {"target_type": "bytes"},
                                    {"max_fraction": 1.0}])
def test_bad_arguments_are_config_errors(resnet, images, filter_scores, kwargs):
    args = {"target": 0.5, **kwargs}
    with pytest.raises(ConfigError):
        prune_filters(resnet, filter_scores(resnet), args.pop("target"), example_inputs=images,
                      dense=dense_stats(resnet, images), **args)


def test_protected_layers_are_never_pruned(resnet, images, filter_scores):
    widths = filter_widths(resnet)
    prune_filters(resnet, filter_scores(resnet), 0.3, example_inputs=images,
                  dense=dense_stats(resnet, images), protected=("blocks.3",))
    after = filter_widths(resnet)
    assert all(after[n] == widths[n] for n in widths if n.startswith("blocks.3."))
    assert len(channel_groups(resnet, images, protected=("blocks.3",))) > 0
