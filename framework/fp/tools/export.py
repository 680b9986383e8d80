"""``fp export``: a registered in-memory dataset written out as an image folder,
``OUT/{train,test}/<class>/NNNNN.png``, the layout the ``imagefolder`` dataset reads. This is how
a user gets CIFAR-10 or CIFAR-100 as a folder for offline machines: export once where torchvision
can download it, copy the folder, and bind ``imagefolder.root`` to it.

PNG keeps every pixel exactly. Class folders take the dataset's class names (``classes``) where
their sorted order is the label order, as ``imagefolder`` assigns labels by sorted folder name;
otherwise, zero-padded label numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from fp import config
from fp.data.loader import InMemoryDataset
from fp.errors import DataError
from fp.manager import Manager, make_manager

SPLITS = ("train", "test")


def export_images(dataset: str, out: Path, bindings: Sequence[str] = (),
                  manager: Manager | None = None) -> dict[str, int]:
    """Write ``dataset`` (built with ``bindings``, e.g. ``cifar10.root = '/data'``) into the new
    or empty folder ``out``; return the images written per split."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; fp export writes only "
                        f"into a new or empty one.")
    manager = manager or make_manager()
    config.parse([], [f"data.dataset = {dataset!r}", *bindings], manager)
    data = manager.registries["datasets"].build(dataset)
    if not isinstance(data, InMemoryDataset):
        raise DataError(f"dataset {dataset!r} is not held in memory, so fp export cannot read "
                        f"its images; it exports in-memory datasets such as cifar10.")
    names = class_folders(getattr(data, "classes", None), data.num_classes)
    written = {}
    for split in SPLITS:
        images, labels = data.splits[split].images, data.splits[split].labels
        for folder in {names[int(k)] for k in labels.unique()}:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            pixels = image.permute(1, 2, 0).numpy()
            picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
            picture.save(out / split / names[label] / f"{i:05d}.png")
        written[split] = len(labels)
    return written


def class_folders(classes: Sequence[str] | None, count: int) -> list[str]:
    """Folder names whose sorted order is the label order: the class names where that holds,
    else the labels zero-padded to one width."""
    if classes is not None and len(classes) == count and list(classes) == sorted(set(classes)) \
            and all(c and "/" not in c and c not in (".", "..") for c in classes):
        return list(classes)
    width = len(str(count - 1))
    return [f"{k:0{width}d}" for k in range(count)]
