"""``target_type = "latency"``: a bisection over the ranked slots, timed on pruned copies with an
injected latency function (here a deterministic one of the FLOPs), confirmed against the dense
model before it is taken."""
import copy

import pytest
import torch

import fp
from fp.config.settings import Prune
from fp.errors import ConfigError, PruningError
from fp.pruning import (build_model, count_flops, dense_stats, filter_widths, measured_latency,
                        prune_filters, prune_to_latency)

IMAGES = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
FIELDS = {"probe", "phase", "candidate", "slots", "filters", "latency_s", "noise",
          "dense_latency_s", "ratio", "meets_target", "accepted"}


def small_cnn():
    return build_model("small_cnn", num_classes=10, in_channels=3).eval()


def flops_latency(overhead=1e-4):
    """Seconds as a fixed overhead plus one nanosecond per FLOP, no noise."""
    return lambda model: (overhead + 1e-9 * count_flops(model, IMAGES), 0.0)


def prune(model, scores, target, latency_fn, **kwargs):
    return prune_to_latency(model, scores, target, example_inputs=IMAGES, latency_fn=latency_fn,
                            dense=dense_stats(model, IMAGES), **kwargs)


def test_the_smallest_candidate_that_meets_the_target_is_taken(filter_scores):
    model, latency = small_cnn(), flops_latency()
    dense_s = latency(model)[0]
    done = prune(model, filter_scores(model), 0.5, latency, probes=20)
    assert done.dense_latency_s == dense_s and done.final_latency_s == latency(model)[0]
    assert done.final_latency_s <= 0.5 * dense_s
    accepted = [p for p in done.probes if p.accepted]
    assert accepted == [done.probes[-1]] and accepted[0].phase == "confirm"
    assert {r["probe"] for r in done.records()} == set(range(1, len(done.probes) + 1))
    assert all(set(r) == FIELDS for r in done.records())
    # bisection to the end: one step fewer was timed and was too slow
    fewer = [p for p in done.probes if p.candidate == accepted[0].candidate - 1]
    assert fewer and not fewer[0].meets_target
    assert sum(filter_widths(model).values()) == accepted[0].filters
    assert done.summary()["latency_ratio"] <= 0.5


def test_probes_bound_the_timings_and_targets_are_cumulative(filter_scores):
    model, latency = small_cnn(), flops_latency()
    dense, dense_s = dense_stats(model, IMAGES), latency(model)[0]
    reference = copy.deepcopy(model)
    for target in (0.3, 0.5):
        done = prune_to_latency(model, filter_scores(model), target, example_inputs=IMAGES,
                                latency_fn=latency, dense=dense, dense_model=reference, probes=6)
        assert len(done.probes) <= 6
        assert latency(model)[0] <= (1 - target) * dense_s
    again = prune_to_latency(model, filter_scores(model), 0.5, example_inputs=IMAGES,
                             latency_fn=latency, dense=dense)  # dense model rebuilt from fp_arch
    assert again.result.removed == {} and again.probes[0].candidate == 0
    assert again.dense_latency_s == dense_s


@pytest.mark.parametrize("probes", [3, 4, 5])
def test_the_accepted_model_is_always_re_timed_beside_the_dense_one(filter_scores, probes):
    model, latency = small_cnn(), flops_latency()
    done = prune(model, filter_scores(model), 0.5, latency, probes=probes)
    assert len([p for p in done.probes if p.phase == "search"]) <= probes
    accepted = [p for p in done.probes if p.accepted]
    assert [p.phase for p in accepted] == ["confirm"] and accepted[0] is done.probes[-1]
    assert done.final_latency_s == accepted[0].latency_s <= 0.5 * done.dense_latency_s


def test_a_noisy_pass_is_caught_by_the_confirmation(filter_scores):
    true, seen = flops_latency(), set()

    def optimistic(model):  # the first timing of each pruned candidate reads 15% fast
        seconds, key = true(model)[0], sum(filter_widths(model).values())
        lucky = key not in seen and key != dense_filters
        seen.add(key)
        return (0.85 * seconds if lucky else seconds), 0.15

    model = small_cnn()
    dense_filters, dense_s = sum(filter_widths(model).values()), true(model)[0]
    done = prune(model, filter_scores(model), 0.5, optimistic, probes=12)
    confirms = [p for p in done.probes if p.phase == "confirm"]
    assert not confirms[0].meets_target and confirms[-1].accepted
    assert true(model)[0] <= 0.5 * dense_s


def test_every_probe_times_dense_and_candidate_with_the_functions_interleaved_pair(
        filter_scores):
    true, pairs = flops_latency(), []

    def latency_fn(model):
        return true(model)

    def interleaved(dense, model, confirm=False):  # as measured_latency's, fp.timing's clock
        pairs.append((filter_widths(dense), filter_widths(model), confirm))
        return true(dense), true(model)

    latency_fn.interleaved = interleaved
    model = small_cnn()
    dense_widths = filter_widths(model)
    done = prune(model, filter_scores(model), 0.5, latency_fn)
    # every probe is a pair, the confirmations marked as such
    assert [confirm for *_, confirm in pairs] == [p.phase == "confirm" for p in done.probes]
    assert all(dense == dense_widths for dense, *_ in pairs)
    assert pairs[-1][1] == filter_widths(model) and done.probes[-1].accepted
    assert callable(measured_latency(IMAGES).interleaved)


def test_another_rank_applies_the_chosen_candidate_untimed(filter_scores):
    model = small_cnn()
    twin = copy.deepcopy(model)
    done = prune(model, filter_scores(model), 0.5, flops_latency())
    same = prune(twin, filter_scores(twin), 0.5, None, candidate=done.candidate)
    assert same.probes == [] and filter_widths(twin) == filter_widths(model)
    assert all(torch.equal(same.result.removed[k], v) for k, v in done.result.removed.items())
    with pytest.raises(PruningError, match="ranks"):
        fresh = small_cnn()
        prune(fresh, filter_scores(fresh), 0.5, None, candidate=10 ** 6)


def test_an_unreachable_target_leaves_the_model_untouched(filter_scores):
    model = small_cnn()
    widths = filter_widths(model)
    with pytest.raises(PruningError, match="latency cannot be reached"):
        prune(model, filter_scores(model), 0.5, flops_latency(overhead=1.0))
    assert filter_widths(model) == widths


def test_round_to_and_the_cap_hold_for_latency(filter_scores):
    model = small_cnn()
    before = filter_widths(model)
    prune(model, filter_scores(model), 0.6, flops_latency(), round_to=8, max_fraction=0.8)
    for name, width in filter_widths(model).items():
        if width != before[name]:
            assert width % 8 == 0 and width >= before[name] * 0.2


@pytest.mark.parametrize("model_fixture", ["resnet", "concat_net"])
def test_tied_and_interleaved_groups_reach_a_latency_target(model_fixture, request,
                                                            filter_scores, images):
    model, latency = request.getfixturevalue(model_fixture), flops_latency()
    dense_s = latency(model)[0]
    done = prune_to_latency(model, filter_scores(model), 0.4, example_inputs=images,
                            latency_fn=latency, dense=dense_stats(model, images), round_to=2)
    assert latency(model)[0] <= 0.6 * dense_s and model(images).shape == (4, 10)
    before, after = done.result.widths_before, done.result.widths_after
    changed = [width for name, width in after.items() if width != before[name]]
    assert changed and all(width % 2 == 0 for width in changed)


def test_a_zero_target_removes_nothing(filter_scores):
    model = small_cnn()
    done = prune(model, filter_scores(model), 0.0, flops_latency())
    assert done.result.removed == {} and done.probes[-1].accepted


def test_bad_arguments(filter_scores, resnet, images):
    dense = dense_stats(resnet, images)
    prune_filters(resnet, filter_scores(resnet), 0.2, example_inputs=images, dense=dense)
    with pytest.raises(ConfigError, match="dense_model="):  # pruned, and no fp_arch to rebuild
        prune_to_latency(resnet, filter_scores(resnet), 0.5, example_inputs=images,
                         latency_fn=flops_latency(), dense=dense)
    model = small_cnn()
    with pytest.raises(ConfigError, match="probes"):
        prune(model, filter_scores(model), 0.5, flops_latency(), probes=2)
    with pytest.raises(ConfigError, match="measured, not estimated"):
        prune_filters(model, filter_scores(model), 0.5, example_inputs=IMAGES,
                      dense=dense_stats(model, IMAGES), target_type="latency")
    with pytest.raises(ConfigError, match="granularity"):
        fp.prune(model, "magnitude", [(IMAGES, torch.tensor([0, 1]))], 0.5,
                 target_type="latency", granularity="weight")
    with pytest.raises(ConfigError, match="granularity"):
        Prune(target_type="latency", granularity="weight").validate()


def test_gin_settings_take_round_to_and_a_latency_target(manager):
    from fp import config

    st = config.parse([], ["prune.round_to = 8", "prune.target_type = 'latency'",
                           "prune.target = 0.5", "prune.latency_batch = 64"], manager).prune
    assert (st.round_to, st.target_type, st.target, st.latency_batch) == (8, "latency", 0.5, 64)
    assert (st.latency_probes, Prune().round_to, Prune().latency_batch) == (8, 1, None)
    for binding in ("prune.round_to = 0", "prune.latency_probes = 2"):
        with pytest.raises(ConfigError):
            config.parse([], [binding], manager)


def test_fp_prune_takes_a_latency_function():
    model, latency = small_cnn(), flops_latency()
    dense_s = latency(model)[0]
    fp.prune(model, "magnitude", [(IMAGES, torch.tensor([0, 1]))], 0.4, target_type="latency",
             latency_fn=latency, round_to=4)
    assert latency(model)[0] <= 0.6 * dense_s
    assert model.fp_latency["final_latency_s"] <= 0.6 * model.fp_latency["dense_latency_s"]
    assert model.fp_latency["probes"][-1]["accepted"]


@pytest.mark.slow
def test_a_small_cnn_pruned_to_half_its_measured_cpu_latency(filter_scores):
    model = small_cnn()
    example = torch.randn(1, 3, 32, 32)
    latency = measured_latency(example, batch=16, device="cpu", min_time_s=0.2)
    done = prune_to_latency(model, filter_scores(model), 0.5, example_inputs=example,
                            latency_fn=latency, dense=dense_stats(model, example))
    searched = [p for p in done.probes if p.phase == "search"]
    assert len(searched) <= 8 and filter_widths(model) != filter_widths(small_cnn())
    # the accepted figure is always a re-timing interleaved with the dense model
    assert [(p.meets_target, p.phase) for p in done.probes if p.accepted] == [(True, "confirm")]
    assert done.final_latency_s <= 0.5 * done.dense_latency_s
