import math

import pytest
import torch
import torch.nn.functional as F

from fp.errors import ConfigError, PruningError
from fp.pruning import apply_masks, sparsity, weight_masks
from fp.nn import prunable_layers


def magnitude_scores(model):
    return {name: layer.weight.detach().abs() for name, layer in prunable_layers(model)}


def masked(masks):
    return sum(int((~m).sum()) for m in masks.values())


def test_target_fraction_of_all_scored_weights_is_masked(resnet):
    scores = magnitude_scores(resnet)
    masks = weight_masks(scores, 0.6)
    total = sum(s.numel() for s in scores.values())
    assert masked(masks) == round(0.6 * total)
    assert sparsity(resnet, masks) == pytest.approx(0.6, abs=1e-3)
    assert all(m.dtype == torch.bool and m.shape == scores[n].shape for n, m in masks.items())


def test_the_ranking_is_global_lowest_scores_masked_first(resnet):
    scores = magnitude_scores(resnet)
    masks = weight_masks(scores, 0.5)
    kept = torch.cat([s[m] for s, m in zip(scores.values(), masks.values())])
    gone = torch.cat([s[~m] for s, m in zip(scores.values(), masks.values())])
    assert gone.max() <= kept.min()


def test_masked_weights_stay_masked_and_targets_are_cumulative(resnet):
    scores = magnitude_scores(resnet)
    first = weight_masks(scores, 0.3)
    reversed_scores = {n: -s for n, s in scores.items()}  # would now keep what was masked
    second = weight_masks(reversed_scores, 0.5, current=first)
    total = sum(s.numel() for s in scores.values())
    assert masked(second) == round(0.5 * total)
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_per_layer_cap_keeps_five_percent_of_every_layer(resnet):
    scores = magnitude_scores(resnet)
    scores["blocks.3.b.conv.weight"] = scores["blocks.3.b.conv.weight"] - 1e9
    scores["fc.weight"] = scores["fc.weight"] - 1e9
    masks = weight_masks(scores, 0.9)
    for name, mask in masks.items():
        assert int((~mask).sum()) <= math.floor(0.95 * mask.numel())
        assert mask.any()
    fc = masks["fc.weight"]
    assert int(fc.sum()) == fc.numel() - math.floor(0.95 * fc.numel())


def test_protected_weights_get_no_mask(resnet):
    masks = weight_masks(magnitude_scores(resnet), 0.5, protected=("fc",))
    assert "fc.weight" not in masks and "stem.conv.weight" in masks


def test_unreachable_target_nan_scores_and_bad_targets(resnet):
    scores = magnitude_scores(resnet)
    with pytest.raises(PruningError, match="cannot be reached"):
        weight_masks(scores, 0.9, max_fraction=0.5)
    with pytest.raises(ConfigError):
        weight_masks(scores, 1.0)
    scores["fc.weight"][0, 0] = float("nan")
    with pytest.raises(PruningError, match="fc.weight"):
        weight_masks(scores, 0.5)


def test_masks_hold_through_sgd_with_momentum_and_weight_decay(resnet, images):
    masks = weight_masks(magnitude_scores(resnet), 0.7)
    optimizer = torch.optim.SGD(resnet.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    apply_masks(resnet, masks, optimizer)
    params = dict(resnet.named_parameters())
    start = {n: params[n].detach().clone() for n in masks}
    resnet.train()
    for step in range(4):
        optimizer.zero_grad()
        F.cross_entropy(resnet(images), torch.tensor([0, 1, 2, 3])).backward()
        optimizer.step()
        assert any((params[n][~m] != 0).any() for n, m in masks.items())  # the step revives them
        apply_masks(resnet, masks, optimizer)
        for name, mask in masks.items():
            assert (params[name][~mask] == 0).all()
            assert (optimizer.state[params[name]]["momentum_buffer"][~mask] == 0).all()
    assert all(not torch.equal(params[n][m], start[n][m]) for n, m in masks.items())


def test_apply_masks_refuses_a_mask_for_a_missing_parameter(resnet):
    with pytest.raises(PruningError, match="nope.weight"):
        apply_masks(resnet, {"nope.weight": torch.ones(3, dtype=torch.bool)})
