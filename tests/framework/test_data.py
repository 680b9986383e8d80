"""The in-memory fast path: batched augmentation, per-epoch determinism, DDP shards."""
import pytest
import torch

from fp.data import (Augmentation, InMemoryDataset, Split, augment_batch, augment_params,
                     channel_stats, shard_order)
from fp.errors import ConfigError, DataError


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
