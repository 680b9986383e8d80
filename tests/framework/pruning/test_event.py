"""``fp.pruning.prune_event``: the one prune path that ``fp.prune`` and a run's prune events call
(score, let the caller replace the scores, remove filters or mask weights, return the record)."""
import copy

import pytest
import torch

import fp
from fp.errors import ConfigError
from fp.pruning import (PruneOptions, build_model, count_flops, filter_widths, masks_of,
                        prune_event, sparsity)

IMAGES = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
BATCHES = [(IMAGES, torch.arange(8) % 10)]


def small_cnn():
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, in_channels=3)


def test_fp_prune_is_the_prune_event_with_its_options():
    by_facade, by_event = small_cnn(), small_cnn()
    fp.prune(by_facade, "snip", BATCHES, 0.4, target_type="params", max_fraction=0.6, round_to=2)
    options = PruneOptions(target_type="params", max_fraction=0.6, round_to=2)
    model, record = prune_event(by_event, "snip", BATCHES, 0.4, options)
    assert model is by_event and filter_widths(by_event) == filter_widths(by_facade)
    assert all(torch.equal(a, b) for a, b in zip(by_event.state_dict().values(),
                                                 by_facade.state_dict().values()))
    assert record.result.widths_after == filter_widths(by_event)
    assert record.pruned.keys() == {n for n, w in record.result.widths_before.items()
                                    if w != record.result.widths_after[n]}
    assert record.latency is None and record.sparsity is None


def test_weight_masks_live_on_the_model_and_accumulate():
    model = small_cnn()
    options = PruneOptions(granularity="weight")
    _, first = prune_event(model, "magnitude", BATCHES, 0.3, options)
    assert masks_of(model) is first.masks and first.sparsity == pytest.approx(0.3, abs=1e-3)
    _, second = prune_event(model, "magnitude", BATCHES, 0.6, options)
    assert second.sparsity == pytest.approx(sparsity(model, masks_of(model)), abs=0) \
        == pytest.approx(0.6, abs=1e-3)
    assert all(not m2[~m1].any() for m1, m2 in zip(first.masks.values(), second.masks.values()))
    weights = dict(model.named_parameters())
    assert all((weights[n][~m] == 0).all() for n, m in masks_of(model).items())


def test_the_caller_may_replace_the_scores_before_ranking():
    seen = []

    def reverse(scores):
        seen.append(scores)
        return {name: -s for name, s in scores.items()}

    plain, reversed_ = small_cnn(), small_cnn()
    prune_event(plain, "magnitude", BATCHES, 0.3)
    _, record = prune_event(reversed_, "magnitude", BATCHES, 0.3, rescore=reverse)
    assert len(seen) == 1
    assert all(torch.equal(record.scores[n], -seen[0][n]) for n in seen[0])
    assert filter_widths(plain) != filter_widths(reversed_) or any(
        not torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                              reversed_.state_dict().values()))


def test_a_score_context_is_scored_at_its_own_temperature_unless_told():
    model = small_cnn()
    ctx = fp.ScoreContext(model, BATCHES, temperature=4.0)
    expected = fp.score(None, "snip", None, temperature=4.0, ctx=ctx)
    _, record = prune_event(model, "snip", ctx, 0.2, example_inputs=IMAGES[:1],
                            rescore=lambda scores: scores)
    assert all(torch.allclose(record.scores[n], expected[n]) for n in expected)


def test_a_latency_event_takes_a_candidate_asked_for_after_scoring():
    order = []
    timed, untimed = small_cnn().eval(), small_cnn().eval()
    latency = lambda m: (1e-4 + 1e-9 * count_flops(m, IMAGES[:1]), 0.0)  # noqa: E731
    options = PruneOptions(target_type="latency", latency_probes=12)
    _, done = prune_event(timed, "magnitude", BATCHES, 0.5, options, latency_fn=latency)
    assert done.latency is not None and done.latency.final_latency_s <= 0.5 * \
        done.latency.dense_latency_s

    def rank_zeros_choice():
        order.append("candidate")
        return done.latency.candidate

    _, applied = prune_event(untimed, "magnitude", BATCHES, 0.5, options,
                             candidate=rank_zeros_choice,
                             rescore=lambda s: order.append("scored") or s)
    assert order == ["scored", "candidate"] and applied.latency.probes == []
    assert filter_widths(untimed) == filter_widths(timed)


@pytest.mark.parametrize("options, needle", [
    (PruneOptions(granularity="weight", residual="masked"), "residual='masked'"),
    (PruneOptions(granularity="weight", target_type="latency"), "latency target"),
    (PruneOptions(granularity="block"), "granularity"),
    (PruneOptions(max_fraction=1.5), "max_fraction|fraction"),
])
def test_options_no_event_can_prune_by_are_refused_before_scoring(options, needle):
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=needle):
        prune_event(model, "magnitude", BATCHES, 0.3, options)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
