"""prune.scoring_augment: a prune event scores augmented training images (random crop and flip,
as the paper's code does), the same images in the same order as without it, reproducibly from
the seed and the event, alike on every rank, and named in the prune record."""
import functools
import json
from types import SimpleNamespace

import pytest
import torch

import fp
from fp.data import Augmentation, InMemoryDataset, Split
from fp.engine import run_experiment
from fp.engine.prune_event import draw_scoring

PADDING = 2  # pixels: every crop offset but the centred one brings in a zero border


class Numbered(InMemoryDataset):
    """120 constant 9x9 images, image i all i + 1 (never the padding's 0), of class i % 3; an
    augmented image keeps its value at the centre, so the centre says which image it is."""

    name = "numbered"

    def __init__(self):
        values = torch.arange(1, 121, dtype=torch.uint8)
        images = values.view(-1, 1, 1, 1).expand(-1, 1, 9, 9).contiguous()
        split = Split(images, torch.arange(120) % 3)
        self.set_data(split, split, num_classes=3, mean=(0.0,), std=(1 / 255,),
                      augmentation=Augmentation(PADDING, flip=True))


@functools.cache
def manager():
    return fp.make_manager(autoload=False)


def make_run(*, augment, balanced=False, seed=0, rank=0, world_size=1, dataset=None):
    return SimpleNamespace(
        dataset=dataset or Numbered(), measure=manager().registries["measures"].build("snip"),
        device=torch.device("cpu"), rank=rank, world_size=world_size,
        settings=SimpleNamespace(
            prune=SimpleNamespace(samples=30, batch_size=8, balanced=balanced,
                                  scoring_augment=augment),
            experiment=SimpleNamespace(seed=seed)))


def identities(batches) -> list[int]:
    """Which image each scored sample is (its centre value), in order."""
    return [int(v) for x, _ in batches for v in x[:, 0, 4, 4].round()]


def labels(batches) -> list[int]:
    return [int(v) for _, y in batches for v in y]


def pixels(batches) -> torch.Tensor:
    return torch.cat([x for x, _ in batches])


@pytest.mark.parametrize("balanced", [False, True], ids=["unbalanced", "balanced"])
def test_augmented_scoring_images_are_the_same_images_cropped(balanced):
    plain, plain_drawn = draw_scoring(make_run(augment=False, balanced=balanced), 1)
    augmented, drawn = draw_scoring(make_run(augment=True, balanced=balanced), 1)
    assert identities(augmented) == identities(plain) and labels(augmented) == labels(plain)
    assert [len(y) for _, y in augmented] == [len(y) for _, y in plain]
    assert not torch.equal(pixels(augmented), pixels(plain))
    assert (pixels(augmented) == 0).any() and not (pixels(plain) == 0).any()  # padded crops
    assert drawn["scoring_augment"] is True and plain_drawn["scoring_augment"] is False


@pytest.mark.parametrize("balanced", [False, True], ids=["unbalanced", "balanced"])
def test_augmented_draws_are_reproducible_per_seed_and_event(balanced):
    run = make_run(augment=True, balanced=balanced)
    first = pixels(draw_scoring(run, 1)[0])
    assert torch.equal(first, pixels(draw_scoring(make_run(augment=True, balanced=balanced), 1)[0]))
    assert not torch.equal(first, pixels(draw_scoring(run, 2)[0]))
    other_seed = make_run(augment=True, balanced=balanced, seed=1)
    assert not torch.equal(first, pixels(draw_scoring(other_seed, 1)[0]))


def test_ranks_share_one_augmented_balanced_draw():
    alone = draw_scoring(make_run(augment=True, balanced=True), 1)[0]
    shares = [draw_scoring(make_run(augment=True, balanced=True, rank=r, world_size=2), 1)[0]
              for r in (0, 1)]
    by_image = dict(zip(identities(alone), pixels(alone)))
    held = [(i, x) for share in shares for i, x in zip(identities(share), pixels(share))]
    assert sorted(i for i, _ in held) == sorted(by_image)  # disjoint, the same images
    assert all(torch.equal(x, by_image[i]) for i, x in held)  # and the same crops


RUN = ["train.epochs = 3", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 64",
       "digits.size = 8", "train.batch_size = 128", "flow.enabled = False"]


def quick(tmp_path, name, *extra, manager=None):
    return run_experiment(["gin/quickstart.gin"], RUN + list(extra), out=tmp_path / name,
                          quiet=True, manager=manager)


def prune_records(outcome) -> list[dict]:
    lines = (outcome.out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "prune"]


def test_a_run_records_augmented_scoring_and_resumes_to_the_same_model(tmp_path, stopped_after_epoch):
    augment = "prune.scoring_augment = True"
    whole = quick(tmp_path, "whole", augment)
    assert [r["scoring_augment"] for r in prune_records(whole)] == [True, True]
    with pytest.raises(Exception, match="stopped by the test"):  # after event 1, before event 2
        quick(tmp_path, "cut", augment,
              manager=stopped_after_epoch(1))
    resumed = quick(tmp_path, "cut", augment)
    assert resumed.resumed
    assert [r["widths"] for r in prune_records(resumed)] == \
        [r["widths"] for r in prune_records(whole)]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    plain = quick(tmp_path, "plain")
    assert [r["scoring_augment"] for r in prune_records(plain)] == [False, False]
