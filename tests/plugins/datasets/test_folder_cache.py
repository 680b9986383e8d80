"""imagefolder's decoding and its cache: same pixels as PIL, reused when the files are unchanged,
rebuilt when they change or the cache is damaged, kept elsewhere when the data is read-only."""
import numpy as np
import pytest
import torch
from PIL import Image

from fp.errors import DataError
from fp_builtins.datasets import _folder_cache
from fp_builtins.datasets.imagefolder import ImageFolder

TRAIN, TEST = {"ant": 3, "bee": 3}, {"ant": 1, "bee": 2}


def build(root, image_size=8):
    return ImageFolder(root=str(root), image_size=image_size, num_workers=0)


def pil_pixels(path, size):
    """What torchvision's streaming ImageFolder makes of one file (before augmentation)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


@pytest.mark.parametrize("ext, size", [("jpg", (8, 8)), ("jpg", (13, 9)), ("png", (9, 11))])
def test_decoded_pixels_are_pils(image_folder, ext, size, monkeypatch):
    monkeypatch.setattr(_folder_cache, "CHUNK", 2)  # several chunks, on two threads
    root = image_folder({"ant": 4, "bee": 3}, {"ant": 1}, ext=ext, size=size)
    paths = sorted(str(p) for p in (root / "train").rglob(f"*.{ext}"))
    decoded = _folder_cache.decode_files(paths, 8, workers=2)
    assert torch.equal(decoded, torch.stack([pil_pixels(p, 8) for p in paths]))


def test_grey_and_palette_images_become_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "grey.jpg")
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png")
    decoded = _folder_cache.decode_files([str(tmp_path / "grey.jpg"),
                                          str(tmp_path / "palette.png")], 8, workers=1)
    assert decoded.shape == (2, 3, 8, 8)
    assert torch.equal(decoded[0, 0], decoded[0, 2])  # grey: the same value in every channel
    assert torch.equal(decoded[1], pil_pixels(tmp_path / "palette.png", 8))


def test_an_unreadable_image_is_a_data_error_naming_it(image_folder):
    root = image_folder(TRAIN, TEST)
    bad = root / "train" / "bee" / "0001.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=f"{bad} is not a readable image"):
        build(root)


def test_second_build_reads_the_cache_without_decoding(image_folder, monkeypatch):
    root = image_folder(TRAIN, TEST)
    first = build(root)
    assert not first.cache_hit and first.cache_path.parent == root
    monkeypatch.setattr(_folder_cache, "decode_files", lambda *a: pytest.fail("decoded again"))
    second = build(root)
    assert second.cache_hit and second.cache_path == first.cache_path
    for split in ("train", "test"):
        assert torch.equal(first.splits[split].images, second.splits[split].images)
        assert torch.equal(first.splits[split].labels, second.splits[split].labels)


def test_a_changed_file_gets_a_new_cache_and_the_old_one_goes(image_folder):
    root = image_folder(TRAIN, TEST)
    old = build(root)
    changed = root / "test" / "bee" / "0000.jpg"
    Image.new("RGB", (12, 10), (250, 250, 0)).save(changed)
    new = build(root)
    assert not new.cache_hit and new.cache_path != old.cache_path
    assert not old.cache_path.exists() and new.cache_path.exists()
    assert torch.equal(new.splits["test"].images[1], pil_pixels(changed, 8))
    assert build(root, image_size=4).cache_path.exists() and new.cache_path.exists()  # per size


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "garbage"])
def test_a_damaged_cache_is_ignored_and_rebuilt(image_folder, damage):
    root = image_folder(TRAIN, TEST)
    good = build(root)
    data = bytearray(good.cache_path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_a_byte":
        data[len(data) // 2] ^= 0xFF  # inside the image arrays: only the zip CRC notices
    else:
        data = bytearray(b"not an npz")
    good.cache_path.write_bytes(bytes(data))
    again = build(root)
    assert not again.cache_hit
    assert torch.equal(again.splits["train"].images, good.splits["train"].images)
    assert again.cache_path.read_bytes() != bytes(data)  # rewritten


def test_a_cache_of_other_files_under_this_name_is_not_trusted(image_folder):
    one = build(image_folder(TRAIN, TEST, name="one", seed=1))
    two_root = image_folder(TRAIN, TEST, name="two", seed=2)
    two = build(two_root)
    two.cache_path.write_bytes(one.cache_path.read_bytes())  # right name, wrong key inside
    again = build(two_root)
    assert not again.cache_hit
    assert torch.equal(again.splits["train"].images, two.splits["train"].images)


def test_a_read_only_data_folder_caches_under_the_data_root(image_folder, tmp_path, monkeypatch):
    root = image_folder(TRAIN, TEST)
    monkeypatch.setenv("FP_DATA", str(tmp_path / "fp-data"))
    real_temp = _folder_cache.tempfile.NamedTemporaryFile

    def refuse_root(*args, dir, **kwargs):  # as a read-only folder would (tests may run as root)
        if dir == root:
            raise PermissionError(13, "Permission denied")
        return real_temp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(_folder_cache.tempfile, "NamedTemporaryFile", refuse_root)
    first = build(root)
    assert (tmp_path / "fp-data") in first.cache_path.parents
    assert not list(root.glob("*.npz"))
    assert build(root).cache_hit


def test_nowhere_writable_still_decodes(image_folder, monkeypatch):
    monkeypatch.setattr(_folder_cache, "save_cache", lambda *a: False)
    data = build(image_folder(TRAIN, TEST))
    assert data.cache_path is None and not data.cache_hit and len(data) == 6
