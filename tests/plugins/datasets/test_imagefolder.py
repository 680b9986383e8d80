"""ImageFolder datasets built from tiny PNGs written on the fly, held in memory or streamed."""
import pytest
import torch
from PIL import Image

from fp.errors import ConfigError, DataError
from fp_builtins.datasets._folder_stream import FolderLoader
from fp_builtins.datasets.imagefolder import ImageFolder
from fp.data.subsets import apply_subsets
from fp.data import TensorLoader

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


FORMS = pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "streamed"])


@FORMS
def test_shapes_classes_and_normalised_pixels(root, in_memory):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0, in_memory=in_memory)
    assert (len(data), data.num_classes, data.in_channels, data.image_size) == (9, 3, 3, (8, 8))
    x, y = next(iter(data.loader("test", 4)))
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [1, 1, 2]
    mean, std = torch.tensor(data.mean), torch.tensor(data.std)
    blue = (torch.tensor([0.0, 0.0, 1.0]) - mean) / std
    assert torch.allclose(x[0, :, 4, 4], blue, atol=1e-5)


@FORMS
def test_epoch_order_and_augmentation_are_reproducible(root, in_memory):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0, in_memory=in_memory)
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


@FORMS
def test_shards_split_the_training_set(root, in_memory):
    data = ImageFolder(root=str(root), image_size=8, num_workers=0, in_memory=in_memory)
    counts = []
    for rank in (0, 1):
        loader = data.loader("train", 2, shuffle=True, seed=0, rank=rank, world_size=2)
        counts.append(sum(len(y) for _, y in loader))
    assert counts == [4, 4]


@FORMS
def test_worker_processes_give_the_same_batches(root, in_memory):
    def batches(workers):
        data = ImageFolder(root=str(root), image_size=8, num_workers=workers,
                           in_memory=in_memory)
        loader = data.loader(
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


def test_both_forms_deliver_the_same_batches(image_folder):
    root = image_folder({"a": 5, "b": 4, "c": 3}, {"a": 2, "c": 2}, size=(20, 14))  # resized
    held, streamed = (ImageFolder(root=str(root), image_size=16, num_workers=0, in_memory=form)
                      for form in (True, False))
    assert isinstance(held.loader("train", 4), TensorLoader)
    assert isinstance(streamed.loader("train", 4), FolderLoader)
    for split, options in (("test", {}), ("train", dict(shuffle=True, augment=True, seed=5))):
        loaders = [data.loader(split, 4, **options) for data in (held, streamed)]
        for loader in loaders:
            loader.set_epoch(2)
        for (xa, ya), (xb, yb) in zip(*loaders, strict=True):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-6)


def test_auto_holds_what_fits_the_budget_and_streams_the_rest(root):
    big = ImageFolder(root=str(root), image_size=8, num_workers=0, memory_budget_gb=1e-6)
    assert not big.in_memory and "memory_budget_gb = 1e-06" in big.streaming_reason
    assert len(big) == 9 and not list(root.glob("*.npz"))  # streamed: nothing decoded or cached
    small = ImageFolder(root=str(root), image_size=8, num_workers=0)  # 12 x 192 bytes: fits 4 GB
    assert small.in_memory and small.cache_path.parent == root and len(small) == 9
    with pytest.raises(ConfigError, match="in_memory = True, but its 12 images decode to"):
        ImageFolder(root=str(root), image_size=8, in_memory=True, memory_budget_gb=1e-6)


@pytest.mark.parametrize("binding, value", [("in_memory", "yes"), ("memory_budget_gb", -1.0),
                                            ("image_size", 0)])
def test_bad_settings_are_config_errors(root, binding, value):
    with pytest.raises(ConfigError, match=f"imagefolder.{binding} = "):
        ImageFolder(root=str(root), **{binding: value})


def test_per_class_subsets_need_the_in_memory_form(root):
    class Data:
        train_per_class, test_per_class = 2, None

    held = apply_subsets(ImageFolder(root=str(root), image_size=8, num_workers=0), Data, seed=0)
    assert torch.bincount(held.splits["train"].labels).tolist() == [2, 2, 2] and len(held) == 6
    streamed = ImageFolder(root=str(root), image_size=8, num_workers=0, in_memory=False)
    with pytest.raises(ConfigError, match="data.train_per_class needs an in-memory dataset.*"
                                          "imagefolder.in_memory = False"):
        apply_subsets(streamed, Data, seed=0)
    Data.train_per_class = 3
    with pytest.raises(ConfigError, match="more than the 2 images of class 'eel'"):
        apply_subsets(ImageFolder(root=str(root), image_size=8, num_workers=0), Data, seed=0)
