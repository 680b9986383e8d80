"""Your own images, laid out as ``<root>/{train,test}/<class>/<image>``, streamed from disk."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torchvision
from torch.utils.data import DataLoader, Sampler
from torchvision import transforms

import fp
from fp.data import (Augmentation, BatchTransform, augment_params, batches_per_epoch,
                     check_loader_args, shard_order)
from fp.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolder(fp.Dataset):
    """Images in <root>/train/<class>/ and <root>/test/<class>/ folders, resized to image_size."""

    name = "imagefolder"

    def __init__(self, root: str | None = None, image_size: int = 32,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 augment: bool = True, crop_padding: int = 4, flip: bool = True,
                 num_workers: int | None = None):
        if not root:
            raise ConfigError("dataset 'imagefolder' needs a folder: bind imagefolder.root.")
        self.root = Path(root).expanduser()
        to_uint8 = transforms.Compose([transforms.Resize((image_size, image_size)),
                                       transforms.PILToTensor()])
        train = _read_folder(self.root / "train", to_uint8, None)
        self.folders = {"train": train,
                        "test": _read_folder(self.root / "test", to_uint8, train.class_to_idx)}
        self.num_classes = len(train.classes)
        self.in_channels = 3  # torchvision's loader converts every image to RGB
        self.image_size = (image_size, image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augmentation = Augmentation(crop_padding if augment else 0, flip and augment)
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers

    def __len__(self) -> int:
        return len(self.folders["train"])

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
               device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
               world_size: int = 1, drop_last: bool = False) -> "FolderLoader":
        check_loader_args(split, batch_size, rank, world_size, self.name)
        device = torch.device(device)
        sampler = EpochSampler(len(self.folders[split]), shuffle=shuffle, seed=seed, rank=rank,
                               world_size=world_size)
        batches = DataLoader(self.folders[split], batch_size=batch_size, sampler=sampler,
                             num_workers=self.num_workers, pin_memory=device.type == "cuda",
                             drop_last=drop_last, persistent_workers=self.num_workers > 0)
        transform = BatchTransform(self.mean, self.std, self.augmentation, device)
        return FolderLoader(batches, sampler, transform, device,
                            augment=augment and self.augmentation.active)


class _SharedClassesFolder(torchvision.datasets.ImageFolder):
    """An ImageFolder that takes its class-to-index map from the training split."""

    def __init__(self, root: str, transform, class_to_idx: dict[str, int]):
        self._given_classes = class_to_idx
        super().__init__(root, transform=transform, allow_empty=True)

    def find_classes(self, directory):
        return sorted(self._given_classes, key=self._given_classes.get), self._given_classes


def _read_folder(folder: Path, transform, class_to_idx: dict[str, int] | None):
    """The torchvision ImageFolder at ``folder``; test splits reuse the train classes."""
    try:
        if class_to_idx is None:
            return torchvision.datasets.ImageFolder(str(folder), transform=transform)
        _check_no_new_classes(folder, class_to_idx)
        found = _SharedClassesFolder(str(folder), transform, class_to_idx)
    except (FileNotFoundError, NotADirectoryError):
        found = None
    if found is None or len(found) == 0:
        raise DataError(f"no images found in {folder}: expected one sub-folder per class "
                        f"holding .png/.jpg files.")
    return found


def _check_no_new_classes(folder: Path, class_to_idx: dict[str, int]) -> None:
    if not folder.is_dir():
        return
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in class_to_idx)
    if extra:
        raise DataError(f"{folder} has class folders that train/ lacks: {', '.join(extra)}.")


class EpochSampler(Sampler[int]):
    """This rank's indices of one epoch, a pure function of (seed, epoch); see shard_order."""

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int, world_size: int):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def __iter__(self) -> Iterator[int]:
        return iter(shard_order(self.n, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
                                rank=self.rank, world_size=self.world_size).tolist())

    def __len__(self) -> int:
        return self.n if self.world_size == 1 else self.n // self.world_size


class FolderLoader:
    """Batches decoded by DataLoader workers, then augmented and normalised on the device."""

    def __init__(self, batches: DataLoader, sampler: EpochSampler, transform: BatchTransform,
                 device: torch.device, *, augment: bool):
        self.batches, self.sampler, self.transform = batches, sampler, transform
        self.device, self.augment = device, augment

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return batches_per_epoch(len(self.sampler), self.batches.batch_size,
                                 self.batches.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        params = None
        if self.augment:
            params = augment_params(len(self.sampler), self.transform.augmentation,
                                    seed=self.sampler.seed, epoch=self.sampler.epoch,
                                    rank=self.sampler.rank)
        start = 0
        for images, labels in self.batches:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            span = slice(start, start + len(labels))
            start = span.stop
            if params is None:
                yield self.transform(images), labels
            else:
                offsets, flips = (p[span].to(self.device) for p in params)
                yield self.transform(images, offsets, flips), labels
