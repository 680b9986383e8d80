"""The random measure in a run: seeded from experiment.seed, the prune event's index and
random.seed, so seeds prune differently, events draw afresh, a resumed run and every DDP rank
draw what an uninterrupted single process does, and fp.score without a run stays as it was."""
import json
from types import SimpleNamespace

import pytest
import torch

import fp
from fp.engine import run_experiment
from fp.engine.prune_event import scoring_context
from fp_builtins.measures.random import Random
from fp.scoring import ScoreContext, score

RUN = ["train.epochs = 3", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 64",
       "digits.size = 8", "train.batch_size = 128", "flow.enabled = False",
       "prune.measure = 'random'"]


def quick(tmp_path, *extra, name="r", manager=None):
    return run_experiment(["gin/quickstart.gin"], RUN + list(extra), out=tmp_path / name,
                          quiet=True, manager=manager)


def prune_records(out_dir) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "prune"]


def widths(outcome) -> list[dict]:
    return [r["widths"] for r in prune_records(outcome.out_dir)]


def event_scores(model, *, seed=0, index=1, measure=None) -> dict[str, torch.Tensor]:
    """Filter scores of prune event ``index`` of a run with ``experiment.seed = seed``."""
    measure = measure or Random()
    run = SimpleNamespace(
        model=model, measure=measure, device=torch.device("cpu"),
        settings=SimpleNamespace(
            experiment=SimpleNamespace(seed=seed),
            prune=SimpleNamespace(temperature=None, hvp_method="auto", hvp_memory_gb=None,
                                  scoring_layout="contiguous", scoring_shortcuts="off")))
    return score(None, measure, None, ctx=scoring_context(run, None, index))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def differ_everywhere(a: dict, b: dict) -> bool:
    return not any(torch.equal(a[n], b[n]) for n in a)


def test_events_and_experiment_seeds_draw_differently_and_reproducibly(model):
    first = event_scores(model, seed=0, index=1)
    assert same(first, event_scores(model, seed=0, index=1))
    assert differ_everywhere(first, event_scores(model, seed=0, index=2))
    assert differ_everywhere(first, event_scores(model, seed=1, index=1))
    assert differ_everywhere(first, event_scores(model, seed=0, index=1, measure=Random(seed=3)))


def test_random_seed_stays_a_bindable_offset(model, bind):
    ctx = ScoreContext(model, None, seed=12345)
    default = score(model, "random", None, ctx=ctx)
    bind("random.seed = 3")
    assert same(score(model, "random", None, ctx=ctx), score(model, Random(seed=3), None, ctx=ctx))
    assert differ_everywhere(default, score(model, "random", None, ctx=ctx))


def test_without_a_context_seed_random_seed_alone_decides(model, weights):
    for granularity in ("filter", "weight"):
        first = score(model, "random", None, granularity=granularity)
        assert same(first, score(model, "random", None, granularity=granularity))
    filters = score(model, Random(seed=5), None)
    generator = torch.Generator().manual_seed(5)  # the documented draw, unchanged by runs' seeds
    assert same(filters, {n: torch.rand(w.shape[0], generator=generator)
                          for n, w in weights.items()})


def test_experiment_seeds_prune_different_architectures_and_one_seed_repeats(tmp_path):
    first = quick(tmp_path, name="a")
    again = quick(tmp_path, name="b")
    other = quick(tmp_path, "experiment.seed = 1", name="c")
    assert widths(first) == widths(again)
    a, b = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert widths(first) != widths(other)  # before, every seed pruned the same filters
    seeds = [r["scoring_seed"] for r in prune_records(first.out_dir)]
    assert len(set(seeds)) == 2  # one per event, named in the record
    assert seeds != [r["scoring_seed"] for r in prune_records(other.out_dir)]


def test_a_resumed_run_ends_exactly_as_an_uninterrupted_one(tmp_path, stopped_after_epoch):
    whole = quick(tmp_path, name="whole")
    with pytest.raises(Exception, match="stopped by the test"):  # after event 1, before event 2
        quick(tmp_path, name="cut",
              manager=stopped_after_epoch(1))
    resumed = quick(tmp_path, name="cut")
    assert resumed.resumed
    assert widths(resumed) == widths(whole)
    assert [r["scoring_seed"] for r in prune_records(resumed.out_dir)] == \
        [r["scoring_seed"] for r in prune_records(whole.out_dir)]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.slow
def test_two_gloo_ranks_prune_the_same_random_architecture(tmp_path):
    from fp.engine.launch import launch

    results = launch(2, ["gin/quickstart.gin"], RUN, tmp_path / "ddp", "cpu")
    assert results[0]["digest"] == results[1]["digest"]  # same pruning, same weights
    # scores do not depend on the data, so 2 ranks prune what one process does
    alone = quick(tmp_path, name="alone")
    assert [r["widths"] for r in prune_records(tmp_path / "ddp")] == widths(alone)
