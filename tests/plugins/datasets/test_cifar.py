"""CIFAR-10/100 read from files in torchvision's on-disk format; never touches the network."""
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from fp.data import augment_batch, augment_params
from fp.errors import DataError
from fp_builtins.datasets.cifar import Cifar10, Cifar100

PER_BATCH = 4  # images per CIFAR-10 data batch file in these tests


@pytest.fixture(autouse=True)
def files_pass_integrity_check(monkeypatch):
    # torchvision checks the md5 of the real release; synthesised files only need to exist
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: tv_cifar.os.path.isfile(path))


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def images(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(folder / f"data_batch_{i}", {"data": images(rng, PER_BATCH),
                                           "labels": [(i + k) % 10 for k in range(PER_BATCH)]})
    dump(folder / "test_batch", {"data": images(rng, 6), "labels": list(range(6))})
    dump(folder / "batches.meta", {"label_names": [f"c{k}" for k in range(10)]})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    dump(folder / "train", {"data": images(rng, 8), "fine_labels": [99, 0, 5, 7, 1, 2, 3, 4],
                            "coarse_labels": [0] * 8})
    dump(folder / "test", {"data": images(rng, 3), "fine_labels": [98, 1, 2], "coarse_labels": [0] * 3})
    dump(folder / "meta", {"fine_label_names": [f"c{k}" for k in range(100)]})
    return tmp_path


def test_cifar10_shapes_labels_and_pixels(cifar10_root):
    data = Cifar10(root=str(cifar10_root), download=False)
    assert (len(data), data.num_classes, data.in_channels, data.image_size) == (20, 10, 3, (32, 32))
    first = pickle.loads((cifar10_root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert torch.equal(data.splits["train"].images[0].flatten(),
                       torch.from_numpy(first["data"][0]))  # CHW rows in file order
    assert data.splits["train"].labels[:4].tolist() == [1, 2, 3, 4]
    assert data.splits["test"].labels.tolist() == list(range(6))


def test_cifar10_normalises_with_the_paper_statistics(cifar10_root):
    data = Cifar10(root=str(cifar10_root), download=False)
    x, y = next(iter(data.loader("test", 6)))
    raw = data.splits["test"].images.float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)
    assert y.dtype == torch.int64 and y.tolist() == list(range(6))


def test_cifar100_reads_fine_labels(cifar100_root):
    data = Cifar100(root=str(cifar100_root), download=False)
    assert (len(data), data.num_classes) == (8, 100)
    assert data.splits["train"].labels[0] == 99 and data.splits["test"].labels.tolist() == [98, 1, 2]
    assert data.mean == (0.5071, 0.4865, 0.4409)


def test_augmented_batch_is_a_per_sample_crop_and_flip(cifar10_root):
    data = Cifar10(root=str(cifar10_root), download=False)
    loader = data.loader("train", 20, augment=True, seed=5)
    loader.set_epoch(3)
    x, _ = next(iter(loader))
    offsets, flips = augment_params(20, data.augmentation, seed=5, epoch=3, rank=0)
    assert flips.any() and not flips.all() and offsets.max() <= 8
    raw = data.splits["train"].images
    for i in range(20):
        dy, dx = offsets[i].tolist()
        crop = torch.nn.functional.pad(raw[i], (4,) * 4)[:, dy:dy + 32, dx:dx + 32]
        crop = crop.flip(-1) if flips[i] else crop
        assert torch.equal(x[i], loader.transform(crop[None])[0])
    assert torch.equal(x, loader.transform(augment_batch(raw, offsets, flips, 4)))


def test_epochs_are_reproducible_and_shards_disjoint(cifar10_root):
    data = Cifar10(root=str(cifar10_root), download=False)

    def rows_of(epoch, rank=0, world_size=1, augment=True):
        loader = data.loader("train", 3, shuffle=True, augment=augment, seed=2, rank=rank,
                             world_size=world_size)
        loader.set_epoch(epoch)
        return torch.cat([x.flatten(1) for x, _ in loader])

    assert torch.equal(rows_of(1), rows_of(1))
    assert not torch.equal(rows_of(1), rows_of(2))
    shards = [rows_of(1, rank, 2, augment=False) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 10
    everything = torch.cat(shards)
    assert len(torch.unique(everything, dim=0)) == 20
    whole = rows_of(1, augment=False)
    assert torch.equal(shards[1], whole[1::2])


def test_missing_files_without_download_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 is missing .* download is off.*cifar-10-batches-py"):
        Cifar10(root=str(tmp_path), download=False)


def test_failed_download_raises_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"CIFAR-100 .*could not be downloaded .*no network.*"
                                        r"cifar-100-python\.tar\.gz"):
        Cifar100(root=str(tmp_path), download=True)


def test_default_root_follows_fp_data(tmp_path, monkeypatch, cifar10_root):
    monkeypatch.setenv("FP_DATA", str(cifar10_root))
    assert len(Cifar10(download=False)) == 20
