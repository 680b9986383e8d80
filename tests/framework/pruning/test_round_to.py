"""``round_to = k``: every group that loses channels keeps a multiple of k of them, under the cap
and the keep-at-least-one rule, for every target type and for tied and interleaved groups."""
import math

import pytest
import torch

from fp.errors import ConfigError, PruningError
from fp.pruning import (build_model, channel_groups, count_flops, count_params, dense_stats,
                        filter_widths, prunable_filters, prune_filters)


def small_cnn(widths=(32, 64, 64, 128)):
    return build_model("small_cnn", num_classes=10, in_channels=3, widths=widths).eval()


def resnet20():
    return build_model("resnet20", num_classes=10, in_channels=3).eval()


IMAGES = {"small_cnn": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
          "resnet20": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
BUILD = {"small_cnn": small_cnn, "resnet20": resnet20}


def pruned_widths(before, after):
    return {name: width for name, width in after.items() if width != before[name]}


def largest_step(model, images, k):
    """The most filters one rounding step of one group can remove: k slots of every member."""
    return max(k * len(group.members) for group in channel_groups(model, images))


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20"])
@pytest.mark.parametrize("target", [0.2, 0.5, 0.7])
def test_filter_targets_keep_multiples_and_are_met_within_one_step(arch, target, filter_scores):
    model, images = BUILD[arch](), IMAGES[arch]
    dense, step = dense_stats(model, images), largest_step(model, images, 8)
    prune_filters(model, filter_scores(model), target, example_inputs=images, dense=dense,
                  round_to=8)
    changed = pruned_widths(dense["widths"], filter_widths(model))
    assert changed and all(width % 8 == 0 and width >= 8 for width in changed.values())
    goal = round(target * dense["filters"])
    assert goal <= dense["filters"] - prunable_filters(model) < goal + step


@pytest.mark.parametrize("target_type", ["params", "flops"])
def test_residual_tied_groups_keep_one_multiple_for_every_member(target_type, filter_scores):
    model, images = resnet20(), IMAGES["resnet20"]
    dense = dense_stats(model, images)
    groups = [list(g.members) for g in channel_groups(model, images)]
    prune_filters(model, filter_scores(model), 0.5, example_inputs=images, dense=dense,
                  target_type=target_type, round_to=8)
    widths = filter_widths(model)
    for members in groups:  # a group's channels go together: its members keep one width
        assert len({widths[name] for name in members}) == 1
    assert all(w % 8 == 0 for w in pruned_widths(dense["widths"], widths).values())
    now = count_params(model) if target_type == "params" else count_flops(model, images)
    assert 0.5 <= 1 - now / dense[target_type] < 0.6


def adversarial(model, victim):
    scores = {n: torch.rand(w, generator=torch.Generator().manual_seed(3)) + 1
              for n, w in filter_widths(model).items()}
    scores[victim] = torch.full_like(scores[victim], -1e9)
    return scores


@pytest.mark.parametrize("max_fraction,kept", [(0.95, 8), (0.9, 16), (0.8, 32), (0.5, 64)])
def test_the_cap_rounds_the_kept_width_up(max_fraction, kept):
    model, images = small_cnn(), IMAGES["small_cnn"]
    dense, victim = dense_stats(model, images), "features.11.weight"  # 128 filters
    for target in (0.3, 0.45):  # the cap holds across events
        prune_filters(model, adversarial(model, victim), target, example_inputs=images,
                      dense=dense, max_fraction=max_fraction, round_to=8)
    widths = filter_widths(model)
    assert widths[victim] == kept  # 128 - floor(f * 128) rounded up to a multiple of 8
    for name, width in widths.items():
        assert dense["widths"][name] - width <= math.floor(max_fraction * dense["widths"][name])


def test_widths_that_are_no_multiple_and_groups_of_at_most_k_channels():
    model, images = small_cnn((12, 20, 6, 40)), IMAGES["small_cnn"]
    dense = dense_stats(model, images)
    scores = {n: torch.zeros(w) for n, w in filter_widths(model).items()}  # all alike: any may go
    prune_filters(model, scores, 0.52, example_inputs=images, dense=dense, round_to=8)
    widths = filter_widths(model)
    assert widths["features.7.weight"] == 6  # 6 < 8 channels: it cannot keep a multiple of 8
    assert [widths[n] for n in ("features.0.weight", "features.4.weight", "features.11.weight")
            ] == [8, 8, 8]  # 12, 20 and 40 each keep one multiple of 8
    fresh = small_cnn((12, 20, 6, 40))
    with pytest.raises(PruningError, match="round_to=8"):  # all 48 removable filters are 0.55
        prune_filters(fresh, scores, 0.6, example_inputs=images, dense=dense, round_to=8)
    assert filter_widths(fresh) == dense["widths"]


def test_interleaved_slots_count_their_channels(concat_net, images, filter_scores):
    dense = dense_stats(concat_net, images)
    prune_filters(concat_net, filter_scores(concat_net), 0.4, example_inputs=images,
                  dense=dense, round_to=8)
    widths = filter_widths(concat_net)
    assert widths["left.conv.weight"] == 8  # exactly k: losing any would leave no multiple
    changed = pruned_widths(dense["widths"], widths)
    assert "grouped.conv.weight" in changed  # 24 channels in slots of 4 (4 groups)
    assert all(width % 8 == 0 for width in changed.values())


def test_cumulative_events_stay_on_multiples(resnet, images, filter_scores):
    dense = dense_stats(resnet, images)
    for target in (0.2, 0.4):
        prune_filters(resnet, filter_scores(resnet), target, example_inputs=images,
                      dense=dense, round_to=4)
        changed = pruned_widths(dense["widths"], filter_widths(resnet))
        assert all(width % 4 == 0 for width in changed.values())
        assert dense["filters"] - prunable_filters(resnet) >= round(target * dense["filters"])


@pytest.mark.parametrize("round_to", [0, -8, 2.5, True, "8"])
def test_round_to_must_be_a_positive_whole_number(resnet, images, round_to, filter_scores):
    with pytest.raises(ConfigError, match="round_to"):
        prune_filters(resnet, filter_scores(resnet), 0.3, example_inputs=images,
                      dense=dense_stats(resnet, images), round_to=round_to)
