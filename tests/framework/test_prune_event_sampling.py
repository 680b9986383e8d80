"""A prune event's scoring samples: class-balanced draws (exact counts per class, reproducible
from the seed and the event, disjoint across ranks, the same images whatever the world size),
which measures get them by default, the errors a draw can meet, and what the record says."""
import functools
from types import SimpleNamespace

import pytest
import torch

import fp
from fp.errors import ConfigError, DataError
from fp.engine.prune_event import draw_scoring, hvp_record, scoring_batches
from fp.run import PruneEvent
from fp.scoring import ScoreContext, sampling


class Labelled(fp.Dataset):
    """A training split of ``counts[c]`` images of class c, image i holding the number i, with
    the loader contract's seeded shuffle and equal disjoint shards."""

    name = "labelled"

    def __init__(self, counts):
        self.num_classes = len(counts)
        self.targets = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
        self.images = torch.arange(len(self.targets), dtype=torch.float32).view(-1, 1, 1, 1)
        self.reads = 0

    def loader(self, split, batch_size, *, shuffle=False, augment=False, device="cpu", seed=0,
               rank=0, world_size=1, drop_last=False):
        n = len(self.targets)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle \
            else torch.arange(n)
        order = order[rank::world_size][: n // world_size]
        for start in range(0, len(order), batch_size):
            self.reads += 1
            picked = order[start:start + batch_size]
            yield self.images[picked], self.targets[picked]


@functools.cache
def manager():
    return fp.make_manager()


def make_run(dataset, *, samples=60, batch_size=16, balanced=None, measure="grasp", rank=0,
             world_size=1, seed=0):
    return SimpleNamespace(
        dataset=dataset, measure=manager().registries["measures"].build(measure),
        device=torch.device("cpu"), rank=rank, world_size=world_size,
        settings=SimpleNamespace(
            prune=SimpleNamespace(samples=samples, batch_size=batch_size, balanced=balanced,
                                  scoring_augment=False),
            experiment=SimpleNamespace(seed=seed)))


def images(batches) -> list[int]:
    return [int(v) for x, _ in batches for v in x.flatten()]


def counts(batches, classes) -> list[int]:
    return sampling.class_counts(torch.cat([y for _, y in batches]), classes)


def test_a_balanced_draw_has_exactly_samples_over_classes_of_each_class():
    data = Labelled([100, 25, 40])  # imbalanced split; the draw is not
    batches, drawn = draw_scoring(make_run(data, samples=64, batch_size=16), index=1)
    assert counts(batches, 3) == [21, 21, 21]  # 64 // 3; the remainder 1 is dropped
    assert [len(y) for _, y in batches] == [16, 16, 16, 15]  # re-batched, last one short
    assert drawn == {"scoring_balanced": True, "scoring_samples": 63,
                     "scoring_class_counts": [21, 21, 21], "scoring_augment": False}
    assert len(set(images(batches))) == 63


def test_balanced_draws_are_reproducible_per_event_and_differ_between_events():
    data = Labelled([50, 50, 50, 50])
    run = make_run(data, samples=40)
    first, again = scoring_batches(run, 1), scoring_batches(run, 1)
    assert images(first) == images(again)
    assert images(scoring_batches(run, 2)) != images(first)
    assert images(scoring_batches(make_run(data, samples=40, seed=1), 1)) != images(first)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_one_balanced_draw_disjointly(world_size):
    data = Labelled([30, 30, 30, 30, 30])
    alone = images(scoring_batches(make_run(data, samples=50), 1))
    shares = [scoring_batches(make_run(data, samples=50, rank=r, world_size=world_size), 1)
              for r in range(world_size)]
    drawn = [images(s) for s in shares]
    assert sum(len(d) for d in drawn) == 50
    assert sorted(v for d in drawn for v in d) == sorted(alone)  # disjoint, the same images
    assert [sum(c) for c in zip(*(counts(s, 5) for s in shares))] == [10] * 5
    assert max(len(d) for d in drawn) - min(len(d) for d in drawn) <= 1


def test_the_draw_stops_reading_once_every_quota_is_filled():
    data = Labelled([500, 500])
    scoring_batches(make_run(data, samples=20, batch_size=10), 1)
    assert data.reads < 10  # of 100 batches in the split


def test_which_measures_are_balanced_by_default_and_the_setting_overrides():
    defaults = {name: manager().registries["measures"].build(name).balanced
                for name in ("grasp", "grad_norm", "snip", "taylor", "fisher", "bn_taylor")}
    assert defaults == {"grasp": True, "grad_norm": True, "snip": False, "taylor": False,
                        "fisher": False, "bn_taylor": False}
    assert fp.Measure.balanced is False
    data = Labelled([90, 10])  # the shuffled split's first batches are mostly class 0
    snip = make_run(data, samples=20, measure="snip")
    assert draw_scoring(snip, 1)[1] == {"scoring_balanced": False, "scoring_samples": 20,
                                        "scoring_augment": False}  # exactly prune.samples
    assert counts(scoring_batches(make_run(data, samples=20, measure="snip", balanced=True), 1),
                  2) == [10, 10]
    assert draw_scoring(make_run(data, samples=20, balanced=False), 1)[1]["scoring_balanced"] \
        is False


def test_a_data_free_measure_gets_one_example_unbalanced():
    batches, drawn = draw_scoring(make_run(Labelled([5, 5]), measure="magnitude"), 1)
    assert len(batches) == 1 and len(batches[0][1]) == 1 and drawn == {}


def test_too_few_samples_or_images_are_config_errors_naming_prune_samples():
    with pytest.raises(ConfigError, match=r"prune\.samples = 2 is fewer than .* 3 classes"):
        scoring_batches(make_run(Labelled([5, 5, 5]), samples=2), 1)
    with pytest.raises(ConfigError, match=r"prune\.samples .* 10 images .* only 4 of class 1"):
        scoring_batches(make_run(Labelled([50, 4, 50]), samples=30), 1)
    with pytest.raises(ConfigError, match=r"prune\.samples = 3 .* 3 images, fewer than the 4"):
        scoring_batches(make_run(Labelled([5, 5, 5]), samples=3, world_size=4), 1)


def test_a_target_outside_the_classes_is_a_data_error():
    batch = (torch.zeros(2, 1, 1, 1), torch.tensor([0, 3]))
    with pytest.raises(DataError, match="outside the dataset's 3 classes"):
        sampling.draw_balanced([batch], 3, 1)


def test_the_prune_record_says_how_the_samples_were_drawn():
    run = make_run(Labelled([40, 40]), samples=30)
    batches, drawn = draw_scoring(run, 1)
    event = PruneEvent(index=1, step=0, epoch=0, target=0.5, granularity="filter")
    event.ctx = ScoreContext(torch.nn.Linear(1, 2), batches)
    event.ctx.info.update(drawn)
    assert hvp_record(event) == {"scoring_balanced": True, "scoring_samples": 30,
                                 "scoring_class_counts": [15, 15], "scoring_augment": False}


def test_a_real_dataset_draws_balanced_batches():
    digits = manager().registries["datasets"].build("digits")
    batches = scoring_batches(make_run(digits, samples=100, batch_size=32), 3)
    assert counts(batches, 10) == [10] * 10
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]


def test_unbalanced_draws_score_exactly_prune_samples_with_a_short_last_batch():
    data = Labelled([50, 50])
    batches = scoring_batches(make_run(data, samples=40, batch_size=16, measure="snip"), 1)
    assert [len(y) for _, y in batches] == [16, 16, 8]
    shares = [scoring_batches(make_run(data, samples=40, batch_size=16, measure="snip", rank=r,
                                       world_size=2), 1) for r in (0, 1)]
    assert [sum(len(y) for _, y in s) for s in shares] == [20, 20]
