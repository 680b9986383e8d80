"""The in-memory fast path: batched augmentation, per-epoch determinism, DDP shards, and
class-balanced subsets (data.train_per_class / data.test_per_class)."""
import pytest
import torch

from fp import config
from fp.engine.build import build_setup
from fp.data import (Augmentation, InMemoryDataset, Split, augment_batch, augment_params,
                     channel_stats, shard_order)
from fp.data.dataset import Dataset
from fp.errors import ConfigError, DataError
from fp.tools.evaluate import load_dataset
from fp.manager import make_manager
from fp.data.subsets import apply_subsets, per_class_indices


class Tiny(InMemoryDataset):
    name = "tiny"

    def __init__(self, n_train=10, n_test=4, policy=Augmentation(2, True)):
        gen = torch.Generator().manual_seed(0)

        def split(n):
            return Split(torch.randint(0, 256, (n, 2, 5, 6), dtype=torch.uint8, generator=gen),
                         torch.arange(n) % 3)

        self.set_data(split(n_train), split(n_test), num_classes=3, mean=(0.5, 0.25),
                      std=(0.5, 0.125), augmentation=policy)


def manual_crop(image, dy, dx, flip, pad):
    padded = torch.nn.functional.pad(image, (pad,) * 4)
    crop = padded[:, dy:dy + image.shape[1], dx:dx + image.shape[2]]
    return crop.flip(-1) if flip else crop


def test_augment_batch_matches_a_manual_crop_and_flip_of_each_sample():
    images = torch.randint(0, 256, (6, 3, 7, 5), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [6, 6], [3, 1], [0, 6], [5, 2], [3, 3]])
    flips = torch.tensor([False, True, True, False, True, False])
    out = augment_batch(images, offsets, flips, padding=3)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(6):
        want = manual_crop(images[i], *offsets[i].tolist(), bool(flips[i]), pad=3)
        assert torch.equal(out[i], want)
    centred = augment_batch(images, torch.full((6, 2), 3), torch.zeros(6, dtype=torch.bool), 3)
    assert torch.equal(centred, images)


def test_augment_params_respect_the_policy():
    offsets, flips = augment_params(500, Augmentation(2, False), seed=1, epoch=0, rank=0)
    assert offsets.min() == 0 and offsets.max() == 4 and not flips.any()
    _, flips = augment_params(500, Augmentation(0, True), seed=1, epoch=0, rank=0)
    assert 150 < int(flips.sum()) < 350


def test_shard_order_is_a_function_of_seed_and_epoch():
    a = shard_order(100, shuffle=True, seed=3, epoch=2)
    assert torch.equal(a, shard_order(100, shuffle=True, seed=3, epoch=2))
    assert not torch.equal(a, shard_order(100, shuffle=True, seed=3, epoch=3))
    assert not torch.equal(a, shard_order(100, shuffle=True, seed=4, epoch=2))
    assert torch.equal(shard_order(5, shuffle=False, seed=3, epoch=2), torch.arange(5))


def test_shards_are_disjoint_equal_slices_of_one_permutation():
    full = shard_order(11, shuffle=True, seed=0, epoch=1)
    shards = [shard_order(11, shuffle=True, seed=0, epoch=1, rank=r, world_size=3)
              for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(set(torch.cat(shards).tolist())) == 9
    assert torch.equal(shards[1], full[1::3][:3])


def test_loader_normalises_and_keeps_order_without_shuffle():
    data = Tiny()
    x, y = next(iter(data.loader("test", 4)))
    raw = data.splits["test"].images.float() / 255
    want = (raw - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.125]).view(1, 2, 1, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x, want, atol=1e-5) and torch.equal(y, torch.arange(4) % 3)


@pytest.mark.parametrize("drop_last, lengths", [(False, [4, 4, 2]), (True, [4, 4])])
def test_loader_length_and_last_batch(drop_last, lengths):
    loader = Tiny().loader("train", 4, drop_last=drop_last)
    assert len(loader) == len(lengths)
    assert [len(y) for _, y in loader] == lengths


def test_augmented_epochs_repeat_exactly_after_set_epoch():
    loader = Tiny().loader("train", 3, shuffle=True, augment=True, seed=7)

    def epoch(e):
        loader.set_epoch(e)
        return [(x.clone(), y.clone()) for x, y in loader]

    first, second, again = epoch(0), epoch(1), epoch(0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_augmentation_is_off_for_test_style_loaders_and_off_policies():
    data = Tiny(policy=Augmentation(0, False))
    plain = torch.cat([x for x, _ in data.loader("train", 4)])
    augmented = torch.cat([x for x, _ in data.loader("train", 4, augment=True)])
    assert torch.equal(plain, augmented)


def test_rank_loaders_cover_disjoint_examples():
    data = Tiny(n_train=9, policy=Augmentation(0, False))
    seen = []
    for rank in range(2):
        loader = data.loader("train", 2, shuffle=True, seed=1, rank=rank, world_size=2)
        loader.set_epoch(4)
        assert len(loader) == 2
        seen.append(torch.cat([x for x, _ in loader]).flatten(1))
    rows = torch.cat(seen)
    assert len(rows) == 8 and len(torch.unique(rows, dim=0)) == 8


def test_device_copy_is_made_once():
    data = Tiny()
    assert data.on_device("train", torch.device("cpu")) is data.on_device("train", torch.device("cpu"))


def test_channel_stats_match_torch():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=7)
    scaled = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), scaled.mean((0, 2, 3)))
    assert torch.allclose(torch.tensor(std, dtype=torch.float64),
                          scaled.transpose(0, 1).flatten(1).std(1, unbiased=False))


def test_bad_arguments_are_user_errors():
    data = Tiny()
    with pytest.raises(DataError, match="no split 'val'"):
        data.loader("val", 2)
    with pytest.raises(ConfigError, match="batch size"):
        data.loader("train", 0)
    with pytest.raises(ConfigError, match="rank 2"):
        data.loader("train", 2, rank=2, world_size=2)


def test_labels_out_of_range_are_a_data_error():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="labels outside 0..1"):
        InMemoryDataset().set_data(Split(images, torch.tensor([0, 2])), Split(images, torch.tensor([0, 1])),
                                   num_classes=2, mean=(0.5,), std=(0.5,), augmentation=Augmentation())


class PerClass:
    """Stands in for the ``data`` settings block."""

    def __init__(self, train=None, test=None):
        self.train_per_class, self.test_per_class = train, test


def labelled(labels):
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1)  # pixel = index
    return Split(images, torch.tensor(labels))


class Uneven(InMemoryDataset):
    name = "uneven"

    def __init__(self):
        train = labelled([0] * 7 + [1] * 5 + [2] * 9)
        self.set_data(train, labelled([0, 1, 2, 2, 1, 0]), num_classes=3, mean=(0.5,),
                      std=(0.5,), augmentation=Augmentation(0, False))


def test_per_class_subsets_take_the_same_count_of_every_class_in_order():
    data = apply_subsets(Uneven(), PerClass(train=4, test=2), seed=0)
    train = data.splits["train"]
    assert torch.bincount(train.labels).tolist() == [4, 4, 4] and len(data) == 12
    kept = train.images.view(-1).long()
    assert torch.equal(kept, kept.sort().values)  # original order, so the loader's order rules
    assert torch.equal(Uneven().splits["train"].labels[kept], train.labels)
    assert data.splits["test"].labels.tolist() == [0, 1, 2, 2, 1, 0]  # 2 each: all of it
    x, _ = next(iter(data.loader("train", 12)))
    assert len(x) == 12  # loaders see the subset


def test_per_class_subsets_are_a_function_of_the_seed():
    def kept(seed, **counts):
        return apply_subsets(Uneven(), PerClass(**counts), seed=seed).splits["train"].images
    assert torch.equal(kept(3, train=2), kept(3, train=2))
    assert any(not torch.equal(kept(3, train=2), kept(s, train=2)) for s in range(4, 8))
    assert torch.equal(kept(3, train=2), kept(3, train=2, test=1))  # splits drawn independently
    labels = torch.tensor([0] * 50 + [1] * 50)
    a = per_class_indices(labels, 5, seed=0, split="train")
    assert not torch.equal(a, per_class_indices(labels, 5, seed=0, split="test"))


def test_a_subset_drops_the_stale_device_copy():
    data = Uneven()
    before = data.on_device("train", torch.device("cpu"))
    apply_subsets(data, PerClass(train=1), seed=0)
    assert len(data.on_device("train", torch.device("cpu")).labels) == 3 != len(before.labels)


@pytest.mark.parametrize("counts, message", [
    (dict(train=6), r"data.train_per_class = 6 is more than the 5 images of class 1 in the "
                    r"train split of dataset 'uneven'; use at most 5"),
    (dict(test=3), r"data.test_per_class = 3 is more than the 2 images"),
    (dict(train=0), r"data.train_per_class = 0 must be a positive integer"),
    (dict(test=1.5), r"data.test_per_class = 1.5 must be a positive integer"),
])
def test_impossible_subsets_are_config_errors_naming_the_binding(counts, message):
    with pytest.raises(ConfigError, match=message):
        apply_subsets(Uneven(), PerClass(**counts), seed=0)


def test_subsets_of_a_dataset_without_the_in_memory_form_are_refused():
    class Streamed(Dataset):
        name = "streamed"

    with pytest.raises(ConfigError, match="data.test_per_class needs an in-memory dataset.*"
                                          "'streamed' streams from disk"):
        apply_subsets(Streamed(), PerClass(test=1), seed=0)
    streamed = Streamed()
    assert apply_subsets(streamed, PerClass(), seed=0) is streamed  # nothing asked: no need


def test_runs_and_fp_eval_build_the_same_subset(tmp_path, manager):
    bindings = ["data.dataset = 'digits'", "digits.size = 8", "data.train_per_class = 20",
                "data.test_per_class = 7", "experiment.seed = 4", "flow.enabled = False"]
    setup = build_setup(config.parse([], bindings, manager), manager, tmp_path / "run")
    run = setup.run
    assert len(run.dataset) == 200 and len(run.train_loader) == 2  # batches of 128
    assert torch.bincount(run.dataset.splits["test"].labels).tolist() == [7] * 10
    again = load_dataset(tmp_path / "run", None, make_manager(autoload=False), tmp_path)
    assert torch.equal(again.splits["test"].images, run.dataset.splits["test"].images)
