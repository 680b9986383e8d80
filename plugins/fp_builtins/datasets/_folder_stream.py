"""The streaming form of ``imagefolder`` (``imagefolder.in_memory = False``, or a folder too big
for its memory budget): torchvision's ImageFolder decoded by DataLoader workers, each batch then
augmented and normalised on the device by the same batched transform as the in-memory form."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torchvision
from torch.utils.data import DataLoader, Sampler

from fp.data import BatchTransform, augment_params, batches_per_epoch, shard_order
from fp.errors import DataError


class SharedClassesFolder(torchvision.datasets.ImageFolder):
    """An ImageFolder that takes its class-to-index map from the training split."""

    def __init__(self, root: str, transform, class_to_idx: dict[str, int]):
        self._given_classes = class_to_idx
        super().__init__(root, transform=transform, allow_empty=True)

    def find_classes(self, directory):
        return sorted(self._given_classes, key=self._given_classes.get), self._given_classes


def read_folder(folder: Path, transform, class_to_idx: dict[str, int] | None):
    """The torchvision ImageFolder at ``folder``; test splits reuse the train classes."""
    try:
        if class_to_idx is None:
            return torchvision.datasets.ImageFolder(str(folder), transform=transform)
        check_no_new_classes(folder, class_to_idx)
        found = SharedClassesFolder(str(folder), transform, class_to_idx)
    except (FileNotFoundError, NotADirectoryError):
        found = None
    if found is None or len(found) == 0:
        raise DataError(f"no images found in {folder}: expected one sub-folder per class "
                        f"holding .png/.jpg files.")
    return found


def check_no_new_classes(folder: Path, class_to_idx: dict[str, int]) -> None:
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
