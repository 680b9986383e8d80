"""ImageFolder datasets built from tiny PNGs written on the fly."""
import pytest
import torch
from PIL import Image

from fp.errors import ConfigError, DataError
from fp.plugins.datasets.imagefolder import ImageFolder

COLOURS = {"cat": (255, 0, 0), "dog": (0, 0, 255), "eel": (0, 255, 0)}


def write_pngs(folder, counts):
    for cls, count in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (12, 10), COLOURS[cls]).save(folder / cls / f"{i}.png")


@pytest.fixture
def root(tmp_path):
    write_pngs(tmp_path / "train", {"cat": 4, "dog": 3, "eel": 2})
    write_pngs(tmp_path / "test", {"dog": 2, "eel": 1})  # no cat: indices must still follow train
    return tmp_path


def test_shapes_classes_and_normalised_pixels(root):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0)
    assert (len(data), data.num_classes, data.in_channels, data.image_size) == (9, 3, 3, (8, 8))
    x, y = next(iter(data.loader("test", 4)))
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [1, 1, 2]
    mean, std = torch.tensor(data.mean), torch.tensor(data.std)
    blue = (torch.tensor([0.0, 0.0, 1.0]) - mean) / std
    assert torch.allclose(x[0, :, 4, 4], blue, atol=1e-5)


def test_epoch_order_and_augmentation_are_reproducible(root):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0)
    loader = data.loader("train", 4, shuffle=True, augment=True, seed=3)

    def epoch(e):
        loader.set_epoch(e)
        return [(x, y) for x, y in loader]

    first, again = epoch(1), epoch(1)
    assert len(loader) == 3 and [len(y) for _, y in first] == [4, 4, 1]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    black = (-torch.tensor(data.mean) / torch.tensor(data.std)).view(1, 3, 1, 1)
    padding = torch.isclose(torch.cat([x for x, _ in first]), black).all(1)
    assert padding.any()  # some crops reach into the zero padding (no image here is black)


def test_shards_split_the_training_set(root):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0)
    counts = []
    for rank in (0, 1):
        loader = data.loader("train", 2, shuffle=True, seed=0, rank=rank, world_size=2)
        counts.append(sum(len(y) for _, y in loader))
    assert counts == [4, 4]


def test_worker_processes_give_the_same_batches(root):
    def batches(workers):
        loader = ImageFolder(root=str(root), image_size=8, num_workers=workers).loader(
            "train", 4, shuffle=True, augment=True, seed=1)
        return [x for x, _ in loader]

    assert all(torch.equal(a, b) for a, b in zip(batches(0), batches(1)))


def test_empty_or_missing_folders_are_data_errors(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=f"no images found in {tmp_path / 'train'}"):
        ImageFolder(root=str(tmp_path))
    write_pngs(tmp_path / "train", {"cat": 1})
    with pytest.raises(DataError, match=f"no images found in {tmp_path / 'test'}"):
        ImageFolder(root=str(tmp_path))
    with pytest.raises(ConfigError, match="imagefolder.root"):
        ImageFolder()


def test_test_classes_unknown_to_train_are_a_data_error(root):
    write_pngs(root / "test", {"cat": 1})
    (root / "test" / "yak").mkdir()
    with pytest.raises(DataError, match="train/ lacks: yak"):
        ImageFolder(root=str(root), num_workers=0)
